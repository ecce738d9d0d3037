"""Threat models from text, for the command line and configuration files.

The grammar is the registry's: ``NAME:ARGS`` for a leaf kind (``linf:8/255``, ``spatial:30,3``)
and ``NAME(T1,T2,...)`` for a container (``union(...)``, ``affine(...)``); each class reads its
own arguments (``from_text`` / ``from_members``).
"""

from __future__ import annotations

from . import registry
from .base import Threat


def _split_top(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    # "spatial:30,3" has a comma of its own: a piece that does not start a threat continues
    # the previous one.
    merged: list[str] = []
    for p in (p.strip() for p in parts):
        if merged and ":" not in p and "(" not in p:
            merged[-1] += "," + p
        else:
            merged.append(p)
    return merged


def parse(text: str | Threat) -> Threat:
    """Build a threat model from its text form; ``str(threat)`` gives the text back.

    Examples: ``"linf:0.3"``, ``"linf:8/255"``, ``"l2:2"``, ``"l1:10"``, ``"spatial:30,3"``,
    ``"union(linf:0.3,l2:2)"``, ``"affine(linf:0.3,l1:10)"``. A threat object is returned as is.
    """
    if isinstance(text, Threat):
        return text
    if not isinstance(text, str):
        raise TypeError(f"Threat must be text or a Threat, got {type(text).__name__}")
    src = text.strip()
    paren, colon = src.find("("), src.find(":")
    if paren > 0 and (colon < 0 or paren < colon):
        entry = registry.get(src[:paren].strip().lower())
        if not entry.container:
            raise ValueError(f"Invalid threat {text!r}: {entry.name} is written {entry.syntax}")
        if not src.endswith(")"):
            raise ValueError(f"Invalid threat {text!r}: missing ')' ({registry.grammar()})")
        members = [parse(p) for p in _split_top(src[paren + 1 : -1]) if p]
        return entry.cls.from_members(members, text)
    if colon < 0:
        raise ValueError(f"Invalid threat {text!r} ({registry.grammar()})")
    kind, _, args = src.partition(":")
    entry = registry.get(kind.strip().lower())
    if entry.container:
        raise ValueError(f"Invalid threat {text!r}: {entry.name} is written {entry.syntax}")
    return entry.cls.from_text(args, text)
