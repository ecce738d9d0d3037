"""Threat models from text, for the command line and configuration files."""

from __future__ import annotations

from fractions import Fraction

from .base import Threat
from .combine import Affine, Union
from .lp import L1Ball, L2Ball, LinfBall
from .spatial import Spatial

_GRAMMAR = (
    "expected one of 'linf:EPS', 'l2:EPS', 'l1:EPS', 'spatial:DEGREES,PIXELS', "
    "'union(T1,T2,...)', 'affine(T1,T2)'; EPS may be a fraction such as 8/255"
)


def _number(text: str, where: str) -> float:
    text = text.strip()
    try:
        return float(Fraction(text)) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"Invalid number {text!r} in threat {where!r} ({_GRAMMAR})") from None


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
    low = src.lower()
    for head in ("union(", "affine("):
        if low.startswith(head):
            if not low.endswith(")"):
                raise ValueError(f"Invalid threat {text!r}: missing ')' ({_GRAMMAR})")
            members = [parse(p) for p in _split_top(src[len(head) : -1]) if p]
            if head == "union(":
                return Union(members)
            if len(members) != 2:
                raise ValueError(f"Invalid threat {text!r}: affine takes exactly two threats")
            return Affine(members[0], members[1])
    if ":" not in src:
        raise ValueError(f"Invalid threat {text!r} ({_GRAMMAR})")
    kind, _, arg = src.partition(":")
    kind = kind.strip().lower()
    if kind in ("linf", "l2", "l1"):
        if kind == "l1" and ",q=" in arg:
            eps_text, _, q_text = arg.partition(",q=")
            return L1Ball(_number(eps_text, text), sparsity=_number(q_text, text))
        cls = {"linf": LinfBall, "l2": L2Ball, "l1": L1Ball}[kind]
        return cls(_number(arg, text))
    if kind == "spatial":
        pieces = arg.split(",")
        if len(pieces) != 2:
            raise ValueError(f"Invalid threat {text!r}: spatial takes 'DEGREES,PIXELS'")
        return Spatial(_number(pieces[0], text), _number(pieces[1], text))
    raise ValueError(f"Unknown threat type {kind!r} in {text!r} ({_GRAMMAR})")
