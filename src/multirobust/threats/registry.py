"""Names of threat models: one ``register(...)`` line per kind, read by ``parse``, the command
line's ``multirobust list`` and the generated contract tests.

    register("linf", LinfBall, example="linf:0.1", zero="linf:0")

``example`` is a small instance used by the contract tests (of the threats and of every attack)
and shown by ``multirobust list``; ``zero`` is the same kind with no budget (only ``x`` itself
allowed), which every attack must answer with ``x`` unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Threat


@dataclass(frozen=True)
class ThreatEntry:
    """One registered kind of threat model.

    Attributes:
        name: the name its text form starts with (``"linf"``, ``"union"``).
        cls: the class.
        example: a small instance, as text.
        zero: an instance allowing no perturbation, as text.
        container: its text lists other threats in parentheses (``union(...)``).
    """

    name: str
    cls: type[Threat]
    example: str
    zero: str
    container: bool

    @property
    def syntax(self) -> str:
        """How it is written, e.g. ``"linf:EPS"``."""
        return self.cls.syntax

    @property
    def summary(self) -> str:
        """The first line of the class's docstring."""
        doc = (self.cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""


_REGISTRY: dict[str, ThreatEntry] = {}


def register(
    name: str, cls: type[Threat], *, example: str, zero: str, container: bool = False
) -> None:
    """Add the threat class ``cls`` under ``name`` (also sets ``cls.name``)."""
    if name in _REGISTRY and _REGISTRY[name].cls is not cls:
        raise ValueError(f"Threat name {name!r} is already registered")
    cls.name = name
    if not cls.syntax or "NAME" in cls.syntax:
        cls.syntax = f"{name}(T1,T2,...)" if container else f"{name}:EPS"
    _REGISTRY[name] = ThreatEntry(name, cls, example, zero, container)


def names() -> list[str]:
    """Registered threat names, in registration order."""
    return list(_REGISTRY)


def entries() -> list[ThreatEntry]:
    """Every registered kind of threat model, in registration order."""
    return list(_REGISTRY.values())


def get(name: str) -> ThreatEntry:
    """The entry registered as ``name``."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"Unknown threat type {name!r} ({grammar()})") from None


def grammar() -> str:
    """The text forms accepted by :func:`multirobust.threats.parse`, for error messages."""
    forms = ", ".join(f"'{e.syntax}'" for e in _REGISTRY.values())
    return f"expected one of {forms}; EPS may be a fraction such as 8/255"
