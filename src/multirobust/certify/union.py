"""Which ℓp balls a certificate covers, and certificates for the union of several balls.

A certificate is a statement about one classifier: the smoothed classifier ``g`` for
randomized smoothing, the base network ``f`` for bound propagation. For a point and threats
``linf:ε∞, l2:ε2, l1:ε1`` a classifier is certified for the union of the balls exactly when it
is certified in every one of them (the union's worst case is the worst member). Certificates of
different classifiers are never combined: a smoothing certificate for ℓ2 and an IBP certificate
for ℓ∞ say nothing about one model under the union.

A radius ``R`` in one norm covers balls of the others through the norm inequalities on
``R^d``: ``‖δ‖₂ ≤ ‖δ‖₁``, ``‖δ‖₂ ≤ √d ‖δ‖∞``, ``‖δ‖₁ ≤ √d ‖δ‖₂ ≤ d ‖δ‖∞``. So an ℓ2 radius R
covers ``l2:ε`` for ε ≤ R, ``l1:ε`` for ε ≤ R and ``linf:ε`` for ε ≤ R/√d; an ℓ1 radius R
covers ``l1:ε`` for ε ≤ R, ``l2:ε`` for ε ≤ R/√d and ``linf:ε`` for ε ≤ R/d.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from ..threats import LpBall, lp_ball

__all__ = ["covered_eps", "covers", "p_of", "union_certified"]


def p_of(norm: str) -> float:
    """p of the registered ℓp ball called ``norm`` (``"linf"`` -> ``math.inf``).

    Raises:
        ValueError: for a name that is no registered ℓp ball, listing the ones that are.
    """
    return lp_ball(norm, 0.0).p


def covered_eps(norm: str, radius: float, threat_p: float, dim: int) -> float:
    """The largest ε of an ℓ_{threat_p} ball inside the ``norm`` ball of ``radius`` in R^dim.

    Args:
        norm: the certificate's norm, ``"l2"`` or ``"l1"`` (or ``"linf"``).
        radius: the certified radius in that norm.
        threat_p: p of the threat's ball (``math.inf``, 2 or 1).
        dim: the input dimension d.

    Returns:
        ``radius · c`` with the norm-equivalence constant c (1 when the norms agree).
    """
    p = p_of(norm)
    if p == threat_p:
        return radius
    # ‖δ‖_p ≤ d^{1/p − 1/q} ‖δ‖_q for p < q; for p > q, ‖δ‖_p ≤ ‖δ‖_q.
    if threat_p > p:  # e.g. ℓ2 certificate, ℓ∞ threat: ‖δ‖₂ ≤ √d ‖δ‖∞
        inv_p = 0.0 if p == math.inf else 1.0 / p
        inv_q = 0.0 if threat_p == math.inf else 1.0 / threat_p
        return radius / dim ** (inv_p - inv_q)
    return radius  # e.g. ℓ2 certificate, ℓ1 threat: ‖δ‖₂ ≤ ‖δ‖₁


def covers(norm: str, radius: float, threat: LpBall, dim: int) -> bool:
    """Whether a certificate of ``radius`` in ``norm`` covers the threat's ball."""
    return covered_eps(norm, radius, threat.p, dim) >= threat.eps


def union_certified(per_threat: Mapping[str, Sequence[bool]]) -> list[bool]:
    """Per example: certified in every ball (the union), from ``threat -> per-example flags``."""
    columns = list(per_threat.values())
    if not columns:
        return []
    return [all(flags) for flags in zip(*columns, strict=True)]
