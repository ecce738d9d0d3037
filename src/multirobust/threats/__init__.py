"""Threat models: the sets of inputs an adversary may choose from, each the whole geometry.

``LinfBall``, ``L2Ball``, ``L1Ball`` (ℓp balls ∩ the input box, with exact projections),
``Spatial`` (rotation + translation), ``Union`` (per-example worst case) and ``Affine``
(Tramèr & Boneh 2019). ``parse("linf:8/255")`` builds one from text. Every kind is one
``register(...)`` line below: ``parse``, ``multirobust list`` and the contract tests read the
registry, so a new threat is one file and one line here.
"""

from __future__ import annotations

from .base import (
    BOX,
    Threat,
    ThreatParams,
    ThreatViolation,
    movable_in_box,
    place_params,
    select_params,
)
from .combine import Affine, AffineParams, Union, UnionParams
from .lp import L1Ball, L2Ball, LinfBall, LpBall
from .parse import parse
from .registry import ThreatEntry, entries, get, names, register
from .spatial import Spatial, SpatialParams

register("linf", LinfBall, example="linf:0.1", zero="linf:0")
register("l2", L2Ball, example="l2:0.5", zero="l2:0")
register("l1", L1Ball, example="l1:2", zero="l1:0")
register("spatial", Spatial, example="spatial:20,2", zero="spatial:0,0")
register(
    "union", Union, example="union(linf:0.1,l2:0.5)", zero="union(linf:0,l2:0)", container=True
)
register(
    "affine", Affine, example="affine(linf:0.1,l1:2)", zero="affine(linf:0,l1:0)", container=True
)

#: Names of the ℓp norms (the registered balls), the one list of them.
NORMS: tuple[str, ...] = tuple(e.name for e in entries() if issubclass(e.cls, LpBall))


def lp_ball(norm: str, eps: float, *, what: str = "norm") -> LpBall:
    """The ℓp ball of the norm called ``norm`` (one of :data:`NORMS`) with radius ``eps``.

    ``what`` names the argument in the error (``Invalid norm: 'l3' (must be one of ...)``).
    """
    if norm not in NORMS:
        raise ValueError(f"Invalid {what}: {norm!r} (must be one of {', '.join(NORMS)})")
    ball = get(norm).cls
    assert issubclass(ball, LpBall)
    return ball(eps)


def ball(threat: Threat | str, *, who: str = "This attack") -> LpBall:
    """``threat`` (object or text) as an ℓp ball, or a ``ValueError`` saying ``who`` needs one."""
    tm = parse(threat)
    if not tm.additive:
        raise ValueError(f"{who} needs an ℓp ball ({', '.join(NORMS)}), got {tm}")
    assert isinstance(tm, LpBall)  # `additive` is the mark of the ℓp balls
    return tm


__all__ = [
    "BOX",
    "NORMS",
    "Affine",
    "AffineParams",
    "L1Ball",
    "L2Ball",
    "LinfBall",
    "LpBall",
    "Spatial",
    "SpatialParams",
    "Threat",
    "ThreatEntry",
    "ThreatParams",
    "ThreatViolation",
    "Union",
    "UnionParams",
    "ball",
    "entries",
    "get",
    "lp_ball",
    "movable_in_box",
    "names",
    "parse",
    "place_params",
    "register",
    "select_params",
]
