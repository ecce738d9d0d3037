"""Numbers in threat texts: read ``8/255`` and ``0.3``, and write ε back so it parses to itself."""

from __future__ import annotations

from fractions import Fraction


def number(text: str, where: str) -> float:
    """The number in ``text`` (a decimal or a fraction such as ``8/255``); ``where`` names the
    whole threat text in the error."""
    text = text.strip()
    try:
        return float(Fraction(text)) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise ValueError(
            f"Invalid number {text!r} in threat {where!r} (a decimal, or a fraction such as 8/255)"
        ) from None


def fmt(value: float) -> str:
    """Short text for a number that parses back to the same float (8/255 stays 8/255)."""
    text = repr(float(value))
    num = round(value * 255)
    if len(text) > 8 and num != 0 and num / 255 == value:
        return f"{num}/255"
    return text.removesuffix(".0")
