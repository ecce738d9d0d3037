"""Names of attacks: ``create("pgd", threat="linf:0.3", steps=40)``."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import Attack

_REGISTRY: dict[str, type[Attack]] = {}


def register(name: str) -> Callable[[type[Attack]], type[Attack]]:
    """Class decorator adding an attack under ``name``."""

    def add(cls: type[Attack]) -> type[Attack]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"Attack name {name!r} is already registered")
        _REGISTRY[name] = cls
        return cls

    return add


def names() -> list[str]:
    """All registered attack names, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> type[Attack]:
    """The attack class registered as ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown attack {name!r} (available: {', '.join(names())})") from None


def create(name: str, *, threat: Any, **options: Any) -> Attack:
    """Build the attack ``name`` under ``threat`` (object or text) with ``options``.

    Unknown options raise ``TypeError`` naming the option and the ones the attack takes.
    """
    cls = get(name)
    import dataclasses

    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(
            f"Unknown option(s) {', '.join(unknown)} for attack {name!r} "
            f"(allowed: {', '.join(sorted(allowed - {'threat'}))})"
        )
    return cls(threat=threat, **options)
