"""Attacks: small immutable configs sharing one contract, created by name.

    attack = multirobust.attacks.create("pgd", threat="linf:0.3", steps=40)
    result = attack(model, x, y)            # AttackResult(x_adv, success, loss, norm, ...)

``names()`` lists the registered attacks.
"""

from . import affine, apgd, pgd, spatial  # noqa: F401  (registration)
from .base import Attack, AttackResult, Context, source_target
from .pgd import pgd_perturb
from .registry import create, get, names

__all__ = [
    "Attack",
    "AttackResult",
    "Context",
    "create",
    "get",
    "names",
    "pgd_perturb",
    "source_target",
]
