"""Attacks: small immutable configs sharing one contract, created by name.

    attack = multirobust.attacks.create("pgd", threat="linf:0.3", steps=40)
    result = attack(model, x, y)            # AttackResult(x_adv, success, loss, norm, ...)

``names()`` lists the registered attacks. Every module of this package is imported here, so an
attack registers itself by existing: a new file with an ``@register`` class needs no other edit.
"""

import importlib
import pkgutil

from .base import Attack, AttackResult, Context, source_target
from .pgd import pgd_perturb
from .registry import create, get, names

for _info in pkgutil.iter_modules(__path__):
    if _info.name not in ("base", "registry"):
        importlib.import_module(f"{__name__}.{_info.name}")

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
