"""Deterministic verification of a network by bound propagation: per example, per ℓp ball.

An example is verified for a ball when the lower bound of every margin ``z_y − z_j`` (j ≠ y)
over the ball ∩ box is positive: then no input in the ball changes the prediction, which is
the true label. Methods, from cheap to tight:

- ``"ibp"``: interval bound propagation (Gowal et al. 2018), :mod:`.ibp`;
- ``"crown-ibp"``: CROWN's backward pass for the margins on IBP's intermediate bounds (Zhang
  et al. 2020), never looser than IBP;
- ``"crown"``: CROWN for every intermediate bound too (Zhang et al. 2018): much tighter on
  networks not trained for IBP, about one backward pass per unstable hidden neuron.

The model runs in eval mode without parameter gradients and is restored afterwards.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..models import model_state
from ..threats import lp_ball
from .crown import crown_margins
from .ibp import Ball, PerExample, ThreatLike, _check_x, _margins, as_ball
from .layers import flatten
from .stats import check_count

__all__ = ["BOUND_METHODS", "bound_margins", "check_method", "verified_radius", "verify"]

BOUND_METHODS = ("ibp", "crown-ibp", "crown")


def check_method(method: str) -> str:
    """``method`` if it is one of :data:`BOUND_METHODS`, else ValueError listing them."""
    if method not in BOUND_METHODS:
        raise ValueError(f"Unknown bound method {method!r} (available: {', '.join(BOUND_METHODS)})")
    return method


def _labels(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"y must be a tensor of shape ({x.shape[0]},) matching x")
    if y.is_floating_point() or y.dtype == torch.bool:
        raise ValueError(f"y must hold integer class indices, got dtype {y.dtype}")
    return y.to(device=x.device, dtype=torch.long)


def bound_margins(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatLike | PerExample,
    method: str = "ibp",
) -> torch.Tensor:
    """Lower bounds of the margins ``z_y − z_j`` over the ball ∩ box around each example.

    Args:
        model: an ``nn.Sequential`` of supported layers (:func:`.layers.supported`).
        x: images ``(N, C, H, W)`` in [0, 1].
        y: labels ``(N,)``.
        threat: an ℓ∞, ℓ2 or ℓ1 ball (or :class:`.ibp.PerExample` balls, one ε each).
        method: ``"ibp"``, ``"crown-ibp"`` or ``"crown"``.

    Returns:
        ``(N, num_classes)`` lower bounds (``j = y`` entries 0).

    Raises:
        UnsupportedLayerError: naming a layer bounds cannot pass.
        ValueError: bad method, threat, labels or inputs (NaN, outside [0, 1]).
    """
    check_method(method)
    ball: Ball = threat if isinstance(threat, PerExample) else as_ball(threat)
    _check_x(x)
    y = _labels(y, x)
    with model_state(model), torch.no_grad():
        layers = flatten(model)
        if method == "ibp":
            return _margins(layers, x, y, ball)
        return crown_margins(layers, x, y, ball, full=method == "crown")


def verify(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: ThreatLike | PerExample,
    method: str = "ibp",
) -> torch.Tensor:
    """Per example, whether bound propagation proves the label constant over the ball.

    Returns:
        ``(N,)`` bool; True implies the clean input is classified as ``y`` too.
    """
    low = bound_margins(model, x, y, threat, method)
    y = _labels(y, x)
    return low.scatter(1, y[:, None], math.inf).amin(1) > 0


def verified_radius(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    *,
    method: str = "ibp",
    upper: float,
    steps: int = 10,
) -> torch.Tensor:
    """The largest ε (on a bisection grid) at which each example is verified in ``norm``.

    Verification is monotone in ε (the balls, hence the bounds, are nested), so bisection on
    ``[0, upper]`` finds the verified radius to within ``upper / 2^steps``; the value returned
    is always one that was verified (a lower end), so it is sound.

    Args:
        model: as for :func:`verify`.
        x, y: examples and labels.
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
        method: bound method.
        upper: the largest ε tried (an example verified there gets ``upper``).
        steps: bisection steps.

    Returns:
        ``(N,)`` float64 radii: -1 for an example misclassified without perturbation, else in
        ``[0, upper]``.
    """
    check_method(method)
    steps = check_count(steps, "steps")
    top_ball = lp_ball(norm, 1.0)  # checks the name: one of threats.NORMS
    if not (upper > 0 and math.isfinite(upper)):
        raise ValueError(f"Invalid upper: {upper!r} (must be a number > 0)")
    _check_x(x)
    y = _labels(y, x)
    with model_state(model), torch.no_grad():
        correct = model(x).argmax(1) == y
    lo = torch.where(correct, 0.0, -1.0).to(torch.float64)
    hi = torch.full_like(lo, float(upper))
    top = verify(model, x, y, top_ball.with_eps(float(upper)), method)
    lo = torch.where(top, hi, lo)
    todo = correct & ~top
    for _ in range(steps):
        rows = todo.nonzero().flatten()
        if rows.numel() == 0:
            break
        mid = (lo[rows] + hi[rows]) / 2
        balls = PerExample(top_ball.p, mid.to(x.dtype))
        ok = verify(model, x[rows], y[rows], balls, method)
        lo[rows] = torch.where(ok, mid, lo[rows])
        hi[rows] = torch.where(ok, hi[rows], mid)
    return lo
