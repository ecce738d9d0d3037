"""The accuracy-vs-ε curves of an evaluation: one per ℓp kind among its threats.

``multirobust evaluate`` draws, for every ℓp kind it evaluated (ℓ∞, ℓ2, ℓ1), the robust
accuracy at fixed multiples of each evaluated ε (0, ¼, ½, ¾, 1, 1.5 and 2 times), so the
report shows where the evaluated radius sits on the curve. The curves use the quick preset.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..threats import LpBall, Threat
from .curves import curve
from .report import Curve

__all__ = ["CURVE_MULTIPLES", "curve_radii", "threat_curves"]

#: Points of the accuracy-vs-ε curves, as multiples of the evaluated ε.
CURVE_MULTIPLES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)


def curve_radii(
    threats: Sequence[Threat], multiples: Sequence[float] = CURVE_MULTIPLES
) -> dict[str, list[float]]:
    """ℓp kind -> the sorted radii of its curve (every multiple of every evaluated ε of that
    kind, rounded to 6 decimals so that equal radii meet); threats without an ε are skipped."""
    radii: dict[str, set[float]] = {}
    for t in threats:
        if isinstance(t, LpBall):
            radii.setdefault(t.name, set()).update(round(k * t.eps, 6) for k in multiples)
    return {kind: sorted(eps) for kind, eps in sorted(radii.items())}


def threat_curves(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    threats: Sequence[Threat],
    *,
    batch_size: int = 500,
    seed: int = 0,
    progress: bool = True,
    distributed: bool = False,
    eot_samples: int | None = None,
) -> list[Curve]:
    """One quick-preset :func:`~multirobust.evaluation.curves.curve` per ℓp kind of
    ``threats``, over :func:`curve_radii`, in the order linf/l2/l1 sort to (alphabetical);
    ``eot_samples`` as in :func:`~multirobust.evaluation.curves.curve` (EOT on a randomised
    model)."""
    return [
        curve(
            model,
            x,
            y,
            threat_type=kind,
            eps_list=eps,
            preset="quick",
            batch_size=batch_size,
            seed=seed,
            progress=progress,
            distributed=distributed,
            eot_samples=eot_samples,
        )
        for kind, eps in curve_radii(threats).items()
    ]
