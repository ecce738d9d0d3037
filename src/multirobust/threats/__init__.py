"""Threat models: the sets of inputs an adversary may choose from.

``LinfBall``, ``L2Ball``, ``L1Ball`` (ℓp balls ∩ the input box, with exact projections),
``Spatial`` (rotation + translation), ``Union`` (per-example worst case) and ``Affine``
(Tramèr & Boneh 2019). ``parse("linf:8/255")`` builds one from text.
"""

from .base import BOX, Threat
from .combine import Affine, Union
from .lp import L1Ball, L2Ball, LinfBall, LpBall
from .parse import parse
from .spatial import Spatial

__all__ = [
    "BOX",
    "Affine",
    "L1Ball",
    "L2Ball",
    "LinfBall",
    "LpBall",
    "Spatial",
    "Threat",
    "Union",
    "parse",
]
