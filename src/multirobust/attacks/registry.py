"""Names of attacks: ``create("pgd", threat="linf:0.3", steps=40)`` and
``create_minimum_norm("cw-l2", steps=100)``.

One registry holds both contracts: fixed-ε attacks (:class:`~.base.Attack`) and minimum-norm
attacks (:class:`~.base.MinimumNormAttack`). :func:`create` always returns a fixed-ε attack: a
union threat gives the per-example worst case over its members (:class:`~.union.UnionAttack`) and
a minimum-norm attack is run within the budget (:class:`~.budget.WithinBudget`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from ..threats import Threat
    from .base import Attack, MinimumNormAttack

A = TypeVar("A")

_REGISTRY: dict[str, type[Attack] | type[MinimumNormAttack]] = {}

#: Options that moved from the attack to its call, with where they went.
_MOVED = {
    "goal": "the goal is an argument of the call: attack(model, x, y, goal=attacks.Untargeted())",
    "confidence_threshold": (
        "confidence reduction is a goal: attack(model, x, y, goal=attacks.ReduceConfidence(0.2))"
    ),
    "targets": "targets are an argument of the call: attack(model, x, y, targets=t)",
}


def register(name: str) -> Callable[[A], A]:
    """Class decorator adding an attack under ``name`` (sets the class's ``name`` if unset)."""

    def add(cls: A) -> A:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"Attack name {name!r} is already registered")
        if not cls.__dict__.get("name"):  # type: ignore[attr-defined]
            cls.name = name  # type: ignore[attr-defined]
        _REGISTRY[name] = cls  # type: ignore[assignment]
        return cls

    return add


def names() -> list[str]:
    """All registered attack names (both contracts), sorted."""
    return sorted(_REGISTRY)


def minimum_norm_names() -> list[str]:
    """The registered minimum-norm attacks, sorted."""
    from .base import MinimumNormAttack

    return sorted(n for n, c in _REGISTRY.items() if issubclass(c, MinimumNormAttack))


def get(name: str) -> type[Attack] | type[MinimumNormAttack]:
    """The attack class registered as ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown attack {name!r} (available: {', '.join(names())})") from None


def _check_options(name: str, cls: type, options: dict[str, Any]) -> None:
    allowed = {f.name for f in dataclasses.fields(cls)} - {"threat"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        hints = [_MOVED[k] for k in unknown if k in _MOVED]
        raise TypeError(
            f"Unknown option(s) {', '.join(unknown)} for attack {name!r} "
            f"(allowed: {', '.join(sorted(allowed))})" + "".join(f"; {h}" for h in hints)
        )


def create(name: str, *, threat: Threat | str, **options: Any) -> Attack:
    """The fixed-ε attack ``name`` under ``threat`` (object or text) with ``options``.

    A union threat gives a :class:`~.union.UnionAttack` over its members; a minimum-norm attack
    is run within the threat's budget (:class:`~.budget.WithinBudget`). Unknown options raise
    ``TypeError`` naming the option and the ones the attack takes.
    """
    from ..threats import parse
    from .base import MinimumNormAttack
    from .budget import WithinBudget
    from .union import UnionAttack

    cls = get(name)
    _check_options(name, cls, options)
    tm = parse(threat)
    seed = options.get("seed", 0)

    def one(member: Threat) -> Attack:
        if issubclass(cls, MinimumNormAttack):
            return WithinBudget(attack=cls(**options), threat=member, seed=seed)
        return cls(threat=member, **options)

    members = tm.members()
    if members == (tm,):
        return one(tm)
    return UnionAttack(threat=tm, attacks=tuple(one(m) for m in members), seed=seed)


def create_minimum_norm(name: str, **options: Any) -> MinimumNormAttack:
    """The minimum-norm attack ``name`` with ``options`` (no threat: it returns the smallest
    perturbation per example; see :class:`~.base.MinimumNormResult`)."""
    from .base import MinimumNormAttack

    cls = get(name)
    if not issubclass(cls, MinimumNormAttack):
        raise ValueError(
            f"Attack {name!r} is a fixed-ε attack (create it with attacks.create(name, "
            f"threat=...)); minimum-norm attacks: {', '.join(minimum_norm_names())}"
        )
    _check_options(name, cls, options)
    return cls(**options)
