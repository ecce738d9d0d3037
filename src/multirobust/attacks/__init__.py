"""Attacks: small immutable configs sharing one of two contracts, created by name.

    attack = multirobust.attacks.create("pgd", threat="linf:0.3", steps=40)
    result = attack(model, x, y)                         # AttackResult(x_adv, success, ...)
    result = attack(model, x, y, goal=attacks.LeastLikely())
    smallest = multirobust.attacks.create_minimum_norm("cw-l2")(model, x, y)
    smallest.distance, smallest.robust_accuracy(2.0)     # MinimumNormResult

``names()`` lists the registered attacks, ``minimum_norm_names()`` those of the minimum-norm
contract. Every module of this package is imported here, so an attack registers itself by
existing: a new file with an ``@register`` class needs no other edit.
"""

import importlib
import pkgutil

from ..threats import ThreatViolation
from .base import Attack, AttackResult, Context, MinimumNormAttack, MinimumNormResult
from .budget import WithinBudget
from .goals import (
    Goal,
    LeastLikely,
    RandomTarget,
    ReduceConfidence,
    ResolvedGoal,
    SourceToTarget,
    Targeted,
    Untargeted,
)
from .pgd import pgd_perturb
from .registry import create, create_minimum_norm, get, minimum_norm_names, names
from .union import UnionAttack

for _info in pkgutil.iter_modules(__path__):
    if _info.name not in ("base", "registry"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = [
    "Attack",
    "AttackResult",
    "Context",
    "Goal",
    "LeastLikely",
    "MinimumNormAttack",
    "MinimumNormResult",
    "RandomTarget",
    "ReduceConfidence",
    "ResolvedGoal",
    "SourceToTarget",
    "Targeted",
    "ThreatViolation",
    "UnionAttack",
    "Untargeted",
    "WithinBudget",
    "create",
    "create_minimum_norm",
    "get",
    "minimum_norm_names",
    "names",
    "pgd_perturb",
]
