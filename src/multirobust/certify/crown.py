"""Linear-relaxation bounds: CROWN and CROWN-IBP for sequential ReLU networks.

Zhang et al., "Efficient Neural Network Robustness Certification with General Activation
Functions" (CROWN), NeurIPS 2018, and "Towards Stable and Efficient Training of Verifiably
Robust Neural Networks" (CROWN-IBP), ICLR 2020.

A lower bound of a linear function ``Λ z_K`` of the output is carried backwards through the
network as ``Λ_i z_i + c``. Through an affine layer ``z_{i+1} = W z_i + b``:
``Λ_i = Λ_{i+1} W`` and ``c += Λ_{i+1} b``. Through ``h = ReLU(z)`` with pre-activation bounds
``l ≤ z ≤ u``: stable neurons are the identity or zero; an unstable one (``l < 0 < u``) is
bounded above by the chord ``h ≤ u (z − l) / (u − l)`` and below by ``h ≥ a z`` with
``a = 1`` when ``u ≥ −l`` else ``0`` (CROWN's adaptive choice); a positive coefficient takes
the lower line, a negative one the upper line. At the input the linear function is minimised
exactly over the box ∩ ℓ∞(ε) set, and for ℓ2/ℓ1 also over the ball by the dual norm
(``Λ x − ε ‖Λ‖_q``); the larger of the two is kept.

CROWN-IBP takes the pre-activation bounds ``l, u`` from IBP (cheap: one backward pass for the
specification); CROWN computes them layer by layer with the same backward pass (much tighter
on networks not trained for IBP, and costs one pass per hidden neuron). Layers without a
linear rule here (other activations, pooling, residual blocks) are relaxed by their interval
bounds, which keeps every bound sound.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.grad import conv2d_input

from ..models.normalize import Normalize
from .ibp import (
    Ball,
    Bounds,
    _bn_scale_shift,
    _col,
    _dual_q,
    _margins,
    _spec,
    _step,
    input_interval,
    propagate,
)

__all__ = ["backward_lower", "crown_margins"]

Layers = Sequence[tuple[str, nn.Module]]

_LINEAR = (nn.Linear, nn.Conv2d, Normalize, nn.BatchNorm1d, nn.BatchNorm2d)
_LINEAR_NO_BIAS = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)


def _through_linear(
    module: nn.Module, lam: torch.Tensor, in_shape: torch.Size
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Λ W, Λ b)`` for an affine layer; ``lam`` is ``(N, S, *out)``, ``in_shape`` (*in)."""
    n, s = lam.shape[:2]
    flat = lam.reshape(n * s, *lam.shape[2:])
    if isinstance(module, nn.Linear):
        new = flat @ module.weight
        bias = flat @ module.bias if module.bias is not None else flat.new_zeros(n * s)
    elif isinstance(module, nn.Conv2d):
        new = conv2d_input(
            (n * s, *in_shape),
            module.weight,
            flat,
            module.stride,
            module.padding,  # type: ignore[arg-type]
            module.dilation,
            module.groups,
        )
        bias = (
            flat.sum(dim=(2, 3)) @ module.bias if module.bias is not None else flat.new_zeros(n * s)
        )
    elif isinstance(module, Normalize):
        if module.mean is None or module.std is None:
            return lam, lam.new_zeros(n, s)
        new = flat / module.std
        bias = (new * -module.mean).sum(dim=tuple(range(1, new.dim())))
    elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
        scale, shift = _bn_scale_shift(module)
        view = [1, -1] + [1] * (flat.dim() - 2)
        new = flat * scale.view(view)
        bias = (flat * shift.view(view)).sum(dim=tuple(range(1, flat.dim())))
    else:  # linear without bias (average pooling): transpose by autograd
        with torch.enable_grad():
            probe = flat.new_zeros((n * s, *in_shape), requires_grad=True)
            (new,) = torch.autograd.grad(module(probe), probe, flat)
        bias = flat.new_zeros(n * s)
    return new.reshape(n, s, *in_shape), bias.reshape(n, s)


def _relu_relax(lam: torch.Tensor, pre: Bounds) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Λ', c)`` with ``Λ ReLU(z) ≥ Λ' z + c`` for ``l ≤ z ≤ u``."""
    lo, up = pre.lower.unsqueeze(1), pre.upper.unsqueeze(1)
    active = lo >= 0
    unstable = (lo < 0) & (up > 0)
    width = (up - lo).clamp_min(1e-12)
    upper_slope = torch.where(unstable, up / width, active.to(lam.dtype))
    upper_icpt = torch.where(unstable, -upper_slope * lo, torch.zeros_like(lo))
    lower_slope = torch.where(unstable, (up >= -lo).to(lam.dtype), active.to(lam.dtype))
    pos, neg = lam.clamp_min(0), lam.clamp_max(0)
    new = pos * lower_slope + neg * upper_slope
    const = (neg * upper_icpt).flatten(2).sum(2)
    return new, const


def _box_min(lam: torch.Tensor, b: Bounds) -> torch.Tensor:
    """``min Λ h`` over the box ``b``: ``Λ⁺ l + Λ⁻ u``; ``lam`` is ``(N, S, *shape)``."""
    pos, neg = lam.clamp_min(0), lam.clamp_max(0)
    lo, up = b.lower.unsqueeze(1), b.upper.unsqueeze(1)
    return (pos * lo + neg * up).flatten(2).sum(2)


def backward_lower(
    layers: Layers,
    bounds: Sequence[Bounds],
    x: torch.Tensor,
    ball: Ball,
    lam: torch.Tensor,
) -> torch.Tensor:
    """Lower bounds of ``Λ z`` (z the output of ``layers``) over the ball ∩ box around x.

    Args:
        layers: a flattened sequential network (:func:`.layers.flatten`).
        bounds: ``bounds[i]`` bounds the output of ``layers[i]`` (IBP or tighter); the input
            interval is recomputed from ``x``.
        x: clean inputs ``(N, ...)``.
        ball: the ℓp ball.
        lam: the specification ``(N, S, *output shape)``.

    Returns:
        ``(N, S)`` lower bounds.
    """
    const = lam.new_zeros(lam.shape[:2])
    box = input_interval(x, ball)
    for i in range(len(layers) - 1, -1, -1):
        module = layers[i][1]
        before = bounds[i - 1] if i > 0 else box
        if isinstance(module, _LINEAR + _LINEAR_NO_BIAS):
            lam, bias = _through_linear(module, lam, before.lower.shape[1:])
            const = const + bias
        elif isinstance(module, nn.ReLU):
            lam, c = _relu_relax(lam, before)
            const = const + c
        elif isinstance(module, nn.Flatten):
            lam = lam.reshape(*lam.shape[:2], *before.lower.shape[1:])
        elif isinstance(module, nn.Identity | nn.Dropout):
            pass
        else:
            # No linear rule: relax the layer's output by its interval (sound, IBP-tight).
            return const + _box_min(lam, bounds[i])
    low = const + _box_min(lam, box)
    if ball.p != math.inf:
        flat = lam.flatten(2)
        dual = torch.linalg.vector_norm(flat, ord=_dual_q(ball.p), dim=2)
        exact = const + (flat * x.flatten(1).unsqueeze(1)).sum(2) - _col(ball.eps, 2) * dual
        low = torch.maximum(low, exact)
    return low


def _ibp_record(layers: Layers, x: torch.Tensor, ball: Ball) -> list[Bounds]:
    out: list[Bounds] = [Bounds(x, x)] * len(layers)

    def keep(i: int, b: Bounds) -> None:
        out[i] = b

    propagate(layers, x, ball, record=keep)
    return out


def _tighten_crown(
    layers: Layers, bounds: list[Bounds], x: torch.Tensor, ball: Ball, budget: int
) -> list[Bounds]:
    """Replace the pre-activation bounds of every ReLU by CROWN's, front to back.

    Only neurons unstable under the current bounds (``l < 0 < u``) for some example are
    recomputed: a stable neuron's relaxation is exact whatever its bounds. The ReLUs before
    which no other ReLU runs keep their interval bounds, exact for an affine prefix.
    """
    seen_relu = False
    for i, (_, module) in enumerate(layers):
        if not isinstance(module, nn.ReLU) or i == 0:
            continue
        if not seen_relu:
            seen_relu = True
            continue
        pre = bounds[i - 1]
        shape = pre.lower.shape[1:]
        lower = pre.lower.flatten(1).clone()
        upper = pre.upper.flatten(1).clone()
        todo = ((lower < 0) & (upper > 0)).any(0).nonzero().flatten()
        if todo.numel() == 0:
            continue
        widest = max(int(b.lower[0].numel()) for b in bounds[:i])
        chunk = max(1, budget // (2 * x.shape[0] * max(widest, x[0].numel())))
        for start in range(0, todo.numel(), chunk):
            idx = todo[start : start + chunk]
            k = idx.numel()
            rows = torch.zeros(k, lower.shape[1], dtype=x.dtype, device=x.device)
            rows[torch.arange(k, device=x.device), idx] = 1.0
            spec = torch.cat([rows, -rows]).reshape(1, 2 * k, *shape)
            spec = spec.expand(x.shape[0], *spec.shape[1:])
            low = backward_lower(layers[:i], bounds[:i], x, ball, spec)
            lower[:, idx] = torch.maximum(lower[:, idx], low[:, :k])
            upper[:, idx] = torch.minimum(upper[:, idx], -low[:, k:])
        tight = Bounds(lower.reshape(pre.lower.shape), upper.reshape(pre.lower.shape))
        bounds[i - 1] = tight
        # Later interval bounds from the tighter ones: re-propagate from layer i.
        b = tight
        for j in range(i, len(layers)):
            b = _step(layers[j][1], b)
            bounds[j] = Bounds(
                torch.maximum(bounds[j].lower, b.lower), torch.minimum(bounds[j].upper, b.upper)
            )
            b = bounds[j]
    return bounds


def crown_margins(
    layers: Layers,
    x: torch.Tensor,
    y: torch.Tensor,
    ball: Ball,
    *,
    full: bool = False,
    budget: int = 2**24,
) -> torch.Tensor:
    """Lower bounds of the margins ``z_y − z_j`` by CROWN-IBP (or CROWN when ``full``).

    Args:
        layers: a flattened sequential network.
        x: images ``(N, ...)`` in ``[0, 1]``.
        y: labels ``(N,)``.
        ball: the ℓp ball.
        full: compute every ReLU's pre-activation bounds with CROWN too (one backward pass
            per hidden neuron, ``chunk`` neurons at a time), instead of taking IBP's.
        budget: elements of the largest coefficient tensor of ``full`` CROWN (memory: four
            bytes each in float32); neurons are bounded in chunks that fit.

    Returns:
        ``(N, num_classes)`` lower bounds, the entry ``j = y`` 0; never looser than IBP's.
    """
    bounds = _ibp_record(layers, x, ball)
    if full:
        bounds = _tighten_crown(layers, bounds, x, ball, budget)
    logits = bounds[-1]
    num_classes = logits.lower.shape[1]
    spec = _spec(y, num_classes, x.dtype)
    low = backward_lower(layers, bounds, x, ball, spec)
    # A linear relaxation can be looser than the interval on some specifications (Zhang et
    # al. 2020 see it on IBP-trained networks): keep the better of the two sound bounds.
    low = torch.maximum(low, _margins(layers, x, y, ball))
    return low.scatter(1, y[:, None], 0.0)
