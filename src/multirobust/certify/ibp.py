"""Interval bound propagation (IBP): sound bounds on a network's outputs over an ℓp ball.

Gowal et al., "On the Effectiveness of Interval Bound Propagation for Training Verifiably
Robust Models", arXiv:1810.12715 (2018). The input set is the threat's ball intersected with
the input box, ``{x' : ‖x' − x‖_p ≤ ε, 0 ≤ x' ≤ 1}``. Every layer maps an interval ``[l, u]``
(element-wise) to an interval containing its image:

- affine ``z ↦ Wz + b`` (Linear, Conv2d, Normalize, BatchNorm in eval mode), in centre/radius
  form ``c = (u + l)/2, r = (u − l)/2``:  ``c' = Wc + b,  r' = |W| r``;
- non-decreasing activations (ReLU, softplus, sigmoid, tanh, ...) and pooling:
  ``[f(l), f(u)]``;
- SiLU and GELU (one minimum at ``x*``): ``[min over [l, u], max(f(l), f(u))]``;
- residual blocks: the sum of the branch intervals.

For ℓ2 and ℓ1 balls the first affine layer's bound is the exact one from the dual norm,
``|W_i δ| ≤ ε ‖W_i‖_q`` with ``1/p + 1/q = 1`` (Normalize's per-channel scaling folded into
``W``), intersected with the interval bound of the box ∩ ℓ∞(ε) set (``‖δ‖∞ ≤ ‖δ‖_p``), since
both contain the true image. Margin bounds fold the last linear layer into the specification
``z_y − z_j`` (Gowal et al., "elision"), which is tighter than subtracting logit intervals.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

import torch
import torch.nn.functional as F
from torch import nn

from ..models.architectures import PreActBlock, WideBasicBlock
from ..models.normalize import Normalize
from ..threats import LpBall, Threat, parse
from .layers import AFFINE, MONOTONE, POOLS, QUASICONVEX, RESIDUAL, SHAPE, flatten

__all__ = [
    "Bounds",
    "PerExample",
    "as_ball",
    "input_interval",
    "interval_bounds",
    "margin_bounds",
]

ThreatLike = Threat | str


@dataclass(frozen=True)
class Bounds:
    """Element-wise lower and upper bounds of a layer's output over the input set.

    Shape: ``lower`` and ``upper`` have the layer output's shape ``(N, ...)``.
    """

    lower: torch.Tensor
    upper: torch.Tensor


def as_ball(threat: ThreatLike) -> LpBall:
    """Parse ``threat`` and check that it is an ℓ∞, ℓ2 or ℓ1 ball (what bounds can cover).

    Raises:
        ValueError: for another threat model, saying which are allowed.
    """
    parsed = parse(threat)
    if not parsed.additive or getattr(parsed, "p", None) not in (math.inf, 2.0, 1.0):
        raise ValueError(
            f"Certificates cover ℓ∞, ℓ2 and ℓ1 balls (e.g. linf:0.1, l2:0.5, l1:2), got {parsed}"
        )
    assert isinstance(parsed, LpBall)  # `additive` is the mark of the ℓp balls
    return parsed


def _check_x(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError("x must be a floating-point tensor of images in [0, 1]")
    if x.dim() < 2 or x.shape[0] == 0:
        raise ValueError(f"x must have shape (N, ...) with N >= 1, got {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"x has values outside [0, 1] (min {lo:.4g}, max {hi:.4g})")


@dataclass(frozen=True)
class PerExample:
    """ℓp balls with one ε per example (bisection over radii); quacks like an LpBall.

    Attributes:
        p: the norm's p (``math.inf``, 2 or 1).
        eps: ``(N,)`` radii.
    """

    p: float
    eps: torch.Tensor


Ball = LpBall | PerExample


def _col(eps: float | torch.Tensor, dims: int) -> float | torch.Tensor:
    """ε shaped to broadcast over a ``(N, ...)`` tensor of ``dims`` dimensions."""
    if isinstance(eps, torch.Tensor):
        return eps.view(-1, *([1] * (dims - 1)))
    return eps


def input_interval(x: torch.Tensor, ball: Ball) -> Bounds:
    """The box ``[0, 1]`` ∩ ℓ∞(ε) around ``x``: contains the ℓp ball ∩ box for every p."""
    eps = _col(ball.eps, x.dim())
    return Bounds((x - eps).clamp(0.0, 1.0), (x + eps).clamp(0.0, 1.0))


# --------------------------------------------------------------------------- single layers


def _affine_center(module: nn.Module, c: torch.Tensor) -> torch.Tensor:
    """The affine layer applied to a point (its ordinary forward pass)."""
    return module(c)  # type: ignore[no-any-return]


def _bn_scale_shift(module: nn.BatchNorm1d | nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    assert module.running_var is not None and module.running_mean is not None
    inv = torch.rsqrt(module.running_var + module.eps)
    scale = inv if module.weight is None else module.weight * inv
    shift = -module.running_mean * scale
    if module.bias is not None:
        shift = shift + module.bias
    return scale, shift


def _channel_view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-channel vector shaped to broadcast over ``like`` (channels in dim 1)."""
    return v.view(1, -1, *([1] * (like.dim() - 2)))


def _affine_radius(module: nn.Module, r: torch.Tensor) -> torch.Tensor:
    """``|W| r``: the radius of the affine layer's image of a box of radius ``r``."""
    if isinstance(module, nn.Linear):
        return F.linear(r, module.weight.abs())
    if isinstance(module, nn.Conv2d):
        return F.conv2d(
            r,
            module.weight.abs(),
            None,
            module.stride,
            module.padding,  # type: ignore[arg-type]
            module.dilation,
            module.groups,
        )
    if isinstance(module, Normalize):
        return r if module.std is None else r / module.std
    if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
        scale, _ = _bn_scale_shift(module)
        return r * _channel_view(scale.abs(), r)
    raise TypeError(f"not an affine layer: {type(module).__name__}")


@cache
def _minimum(kind: str, approximate: str) -> tuple[float, float]:
    """(argmin, a value ≤ the minimum) of SiLU or GELU, found on a fine float64 grid."""
    grid = torch.linspace(-4.0, 0.0, 400_001, dtype=torch.float64)
    values = F.silu(grid) if kind == "silu" else F.gelu(grid, approximate=approximate)
    i = int(values.argmin())
    # Grid spacing 1e-5 and |f''| < 1 near the minimum: the grid value exceeds the true
    # minimum by < 1e-10; 1e-6 below it is a safe lower bound in float32 too.
    return float(grid[i]), float(values[i]) - 1e-6


def _quasiconvex(module: nn.Module, b: Bounds) -> Bounds:
    if isinstance(module, nn.SiLU):
        x_star, f_star = _minimum("silu", "none")
    else:
        assert isinstance(module, nn.GELU)
        x_star, f_star = _minimum("gelu", module.approximate)
    fl, fu = module(b.lower), module(b.upper)
    inside = (b.lower <= x_star) & (b.upper >= x_star)
    lower = torch.where(inside, torch.full_like(fl, f_star), torch.minimum(fl, fu))
    return Bounds(lower, torch.maximum(fl, fu))


def _affine(module: nn.Module, b: Bounds) -> Bounds:
    c = (b.upper + b.lower) / 2
    r = (b.upper - b.lower) / 2
    c2 = _affine_center(module, c)
    r2 = _affine_radius(module, r)
    return Bounds(c2 - r2, c2 + r2)


def _residual(module: PreActBlock | WideBasicBlock, b: Bounds) -> Bounds:
    """A pre-activation residual block: the branch and the shortcut bounded separately."""
    out = _step(module.act1, _step(module.bn1, b))
    res = b if module.shortcut is None else _step(module.shortcut, out)
    out = _step(module.conv1, out)
    out = _step(module.act2, _step(module.bn2, out))
    if isinstance(module, WideBasicBlock):
        out = _step(module.dropout, out)
    out = _step(module.conv2, out)
    return Bounds(out.lower + res.lower, out.upper + res.upper)


def _step(module: nn.Module, b: Bounds) -> Bounds:
    """One layer of interval propagation."""
    if isinstance(module, AFFINE):
        return _affine(module, b)
    if isinstance(module, MONOTONE + POOLS):
        return Bounds(module(b.lower), module(b.upper))
    if isinstance(module, QUASICONVEX):
        return _quasiconvex(module, b)
    if isinstance(module, SHAPE):
        if isinstance(module, nn.Flatten):
            return Bounds(module(b.lower), module(b.upper))
        return b  # identity, or dropout in eval mode (checked by layers.flatten)
    if isinstance(module, RESIDUAL):
        return _residual(module, b)  # type: ignore[arg-type]
    raise TypeError(f"no interval rule for {type(module).__name__}")


# --------------------------------------------------------------------------- first layer, ℓ2/ℓ1


@dataclass
class _Ball:
    """The ℓp ball through the diagonal maps before the first linear layer.

    ``center`` is ``x`` mapped through those layers and ``scale`` the diagonal factor, so the
    current input is ``center + scale ⊙ δ`` with ``‖δ‖_p ≤ ε``.
    """

    center: torch.Tensor
    scale: torch.Tensor
    q: float
    eps: float | torch.Tensor


def _dual_rows(module: nn.Linear | nn.Conv2d, ball: _Ball) -> torch.Tensor | None:
    """``ε ‖(W ⊙ scale)_i‖_q`` per output (broadcast over the batch), or None if unavailable."""
    w = module.weight
    if isinstance(module, nn.Linear):
        scale = ball.scale.reshape(1, -1)
        if scale.shape[1] != w.shape[1]:
            return None
        rows = torch.linalg.vector_norm(w * scale, ord=ball.q, dim=1)
        return _col(ball.eps, 2) * rows.unsqueeze(0)
    scale = ball.scale
    if scale.dim() != 4:
        return None
    per_channel = scale.amax(dim=(2, 3), keepdim=True)
    if not torch.equal(per_channel.expand_as(scale), scale) or module.groups != 1:
        return None  # the folding below needs one factor per input channel
    w_eff = w * per_channel.view(1, -1, 1, 1)
    if ball.q == 2.0:
        # Σ over the taps inside the image of w², exactly (zero padding drops the others).
        ones = torch.ones_like(scale)
        sq = F.conv2d(
            ones,
            w_eff.square(),
            None,
            module.stride,
            module.padding,  # type: ignore[arg-type]
            module.dilation,
        )
        return _col(ball.eps, 4) * sq.clamp_min(0).sqrt()
    # q = ∞ (ℓ1 ball): the largest tap per output channel; ≥ the exact per-position maximum.
    biggest = w_eff.abs().amax(dim=(1, 2, 3)).view(1, -1, 1, 1)
    ones = torch.ones_like(scale)
    out_shape = F.conv2d(
        ones,
        w_eff,
        None,
        module.stride,
        module.padding,
        module.dilation,  # type: ignore[arg-type]
    )
    return _col(ball.eps, 4) * biggest.expand_as(out_shape)


def _advance_ball(module: nn.Module, ball: _Ball) -> _Ball | None:
    """The ball through a diagonal layer (Normalize, Flatten, identity), else None."""
    if isinstance(module, Normalize):
        if module.std is None or module.mean is None:
            return ball
        return _Ball(module(ball.center), ball.scale / module.std, ball.q, ball.eps)
    if isinstance(module, nn.Flatten):
        scale = ball.scale.expand(1, *ball.center.shape[1:])
        return _Ball(module(ball.center), module(scale), ball.q, ball.eps)
    if isinstance(module, nn.Identity | nn.Dropout):
        return ball
    return None


def _first_linear(module: nn.Linear | nn.Conv2d, ball: _Ball, b: Bounds) -> Bounds:
    """The interval bound of the first linear layer, tightened with the dual-norm bound."""
    out = _affine(module, b)
    radius = _dual_rows(module, ball)
    if radius is None:
        return out
    c = module(ball.center)
    return Bounds(torch.maximum(out.lower, c - radius), torch.minimum(out.upper, c + radius))


def _dual_q(p: float) -> float:
    return 1.0 if p == math.inf else (2.0 if p == 2.0 else math.inf)


# --------------------------------------------------------------------------- whole network


def propagate(
    layers: Sequence[tuple[str, nn.Module]],
    x: torch.Tensor,
    ball: Ball,
    *,
    record: Callable[[int, Bounds], None] | None = None,
) -> Bounds:
    """Interval bounds after ``layers`` (a :func:`.layers.flatten` list) for the ball around x.

    Args:
        layers: the layers to pass, in order.
        x: clean inputs ``(N, ...)`` in ``[0, 1]``.
        ball: the ℓp ball (or :class:`PerExample` balls).
        record: called as ``record(i, bounds)`` with the bounds after layer ``i``.

    Returns:
        The bounds of the last layer's output.
    """
    b = input_interval(x, ball)
    state: _Ball | None = None
    if ball.p != math.inf:
        state = _Ball(x, torch.ones_like(x[:1]), _dual_q(ball.p), ball.eps)
    for i, (_, module) in enumerate(layers):
        if state is not None and isinstance(module, nn.Linear | nn.Conv2d):
            b = _first_linear(module, state, b)
            state = None
        else:
            if state is not None:
                state = _advance_ball(module, state)
            b = _step(module, b)
        if record is not None:
            record(i, b)
    return b


def interval_bounds(model: nn.Module, x: torch.Tensor, threat: ThreatLike) -> Bounds:
    """IBP bounds of the logits over the threat's ball ∩ box around each input.

    Args:
        model: an ``nn.Sequential`` of supported layers (every :mod:`multirobust.models`
            architecture); BatchNorm and Dropout must be in eval mode.
        x: images ``(N, C, H, W)`` in ``[0, 1]``.
        threat: an ℓ∞, ℓ2 or ℓ1 ball (object or text such as ``"linf:0.1"``).

    Returns:
        :class:`Bounds` of shape ``(N, num_classes)``, differentiable with respect to the
        model's parameters (IBP training backpropagates through them).

    Raises:
        UnsupportedLayerError: naming a layer bounds cannot pass.
        ValueError: for NaN/infinite inputs, inputs outside [0, 1], or another threat.
    """
    ball = as_ball(threat)
    layers = flatten(model)
    _check_x(x)
    return propagate(layers, x, ball)


def _spec(y: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """``C[n, j] = e_{y_n} − e_j``: the margins of the true class over every class."""
    eye = torch.eye(num_classes, dtype=dtype, device=y.device)
    return eye[y].unsqueeze(1) - eye.unsqueeze(0)  # (N, C, C)


def margin_bounds(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatLike
) -> torch.Tensor:
    """Lower bounds of the margins ``z_y − z_j`` over the ball, by IBP with the last layer elided.

    The example is verified when every margin with ``j ≠ y`` is positive.

    Args:
        model: as for :func:`interval_bounds`.
        x: images ``(N, C, H, W)`` in ``[0, 1]``.
        y: labels ``(N,)``.
        threat: an ℓ∞, ℓ2 or ℓ1 ball.

    Returns:
        ``(N, num_classes)`` lower bounds; the entry ``j = y`` is 0.

    Shape: x (N, ...), y (N,) -> (N, num_classes).
    """
    ball = as_ball(threat)
    layers = flatten(model)
    _check_x(x)
    return _margins(layers, x, y, ball)


def _margins(
    layers: Sequence[tuple[str, nn.Module]], x: torch.Tensor, y: torch.Tensor, ball: Ball
) -> torch.Tensor:
    last = layers[-1][1]
    if not isinstance(last, nn.Linear):
        b = propagate(layers, x, ball)
        low = b.lower.gather(1, y[:, None]) - b.upper
        return low.scatter(1, y[:, None], 0.0)
    # Elision: propagate to the penultimate layer, then bound C W h + C b exactly over its box.
    hidden_layers = layers[:-1]
    w, bias = last.weight, last.bias
    spec = _spec(y, w.shape[0], w.dtype)  # (N, C, C)
    w_spec = spec @ w  # (N, C, H)
    b_spec = spec @ bias if bias is not None else torch.zeros_like(spec[..., 0])
    if not hidden_layers:
        b = input_interval(x, ball)
        lower_h, upper_h = b.lower.flatten(1), b.upper.flatten(1)
        state: _Ball | None = (
            _Ball(x, torch.ones_like(x[:1]), _dual_q(ball.p), ball.eps)
            if ball.p != math.inf
            else None
        )
    else:
        b = propagate(hidden_layers, x, ball)
        lower_h, upper_h = b.lower, b.upper
        state = None
        if ball.p != math.inf:
            # The ball survives to the last layer only through diagonal layers (linear models).
            state = _Ball(x, torch.ones_like(x[:1]), _dual_q(ball.p), ball.eps)
            for _, module in hidden_layers:
                state = _advance_ball(module, state) if state is not None else None
    c = ((upper_h + lower_h) / 2).unsqueeze(-1)  # (N, H, 1)
    r = ((upper_h - lower_h) / 2).unsqueeze(-1)
    low = (w_spec @ c).squeeze(-1) - (w_spec.abs() @ r).squeeze(-1) + b_spec
    if state is not None:
        scale = state.scale.reshape(1, 1, -1)
        center = state.center.reshape(x.shape[0], -1, 1)
        if scale.shape[-1] == w.shape[1] and center.shape[1] == w.shape[1]:
            dual = torch.linalg.vector_norm(w_spec * scale, ord=state.q, dim=2)
            exact = (w_spec @ center).squeeze(-1) + b_spec - _col(state.eps, 2) * dual
            low = torch.maximum(low, exact)
    return low.scatter(1, y[:, None], 0.0)
