"""IBP training: cross-entropy on the worst-case logits that interval bounds allow.

Gowal et al., "On the Effectiveness of Interval Bound Propagation for Training Verifiably
Robust Models", arXiv:1810.12715 (2018), Section 3:

    L = κ · CE(z(x), y) + (1 − κ) · CE(ẑ(x, ε), y),    ẑ_j = −m̲_j,  ẑ_y = 0,

where ``m̲_j`` is the IBP lower bound of the margin ``z_y − z_j`` over the ε-ball (last layer
elided, :func:`multirobust.certify.margin_bounds`): ``CE(ẑ, y)`` is an upper bound of the
worst-case cross-entropy of the specification. The schedules of the paper ramp ε linearly from
0 to its training value while κ falls linearly from 1 to its final value (½ in the paper) over
the same steps; in the fit loop that ramp is ``eps_warmup`` (epochs) and the ``ibp`` method's
batch step (:mod:`multirobust.training.methods`) reads the loop's ``eps_scale`` s ∈ (0, 1]:
``ε_t = s ε``, ``κ_t = 1 − s (1 − κ)``.

    loss = ibp_loss(model, x, y, "linf:0.2", kappa=0.5)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..certify.ibp import as_ball, margin_bounds
from ..models import unwrap
from ..threats import Threat

__all__ = ["ibp_loss", "kappa_at"]


def _check_kappa(kappa: Any) -> float:
    ok = isinstance(kappa, int | float) and not isinstance(kappa, bool)
    if not ok or not 0.0 <= float(kappa) <= 1.0:
        raise ValueError(f"Invalid kappa: {kappa!r} (must be a number in [0, 1])")
    return float(kappa)


def kappa_at(kappa: float, scale: float) -> float:
    """κ at ramp fraction ``scale`` ∈ [0, 1]: 1 at the start, ``kappa`` at the end (linear)."""
    s = min(max(float(scale), 0.0), 1.0)
    return 1.0 - s * (1.0 - kappa)


def ibp_loss(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: Threat | str,
    *,
    kappa: float = 0.5,
    stats: dict[str, Any] | None = None,
    **_: Any,
) -> torch.Tensor:
    """Gowal et al.'s IBP objective ``κ CE(z, y) + (1 − κ) CE(ẑ, y)`` on one batch.

    Args:
        model: an ``nn.Sequential`` of layers bound propagation supports (every
            :mod:`multirobust.models` architecture), in training mode if the caller trains.
        x: images ``(N, C, H, W)`` in [0, 1].
        y: labels ``(N,)``.
        threat: the ℓ∞ (or ℓ2/ℓ1) ball to train for; ε 0 gives the clean loss.
        kappa: weight of the clean cross-entropy, in [0, 1].
        stats: receives ``"adv_logits"`` (the worst-case logits ẑ, detached) and
            ``"verified"`` (fraction of the batch whose IBP margins are all positive).

    Returns:
        The scalar loss.
    """
    k = _check_kappa(kappa)
    ball = as_ball(threat)
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    if k >= 1.0 or ball.eps == 0:
        if stats is not None:
            stats["adv_logits"] = logits.detach()
        return loss
    # Bounds walk the bare layers (a DDP wrapper is not a Sequential); their gradients reach
    # the same parameters, which DDP's hooks all-reduce once the backward has summed them.
    worst = -margin_bounds(unwrap(model), x, y, ball)
    robust = F.cross_entropy(worst, y)
    if stats is not None:
        stats["adv_logits"] = worst.detach()
        others = worst.detach().scatter(1, y[:, None], -torch.inf)
        stats["verified"] = (others.amax(1) < 0).float().mean()
    return k * loss + (1 - k) * robust
