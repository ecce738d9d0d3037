"""Activation functions selectable by name for every architecture.

Smooth activations (softplus, SiLU/swish, GELU) give better-behaved input gradients than ReLU
and improve adversarial training: Xie et al., "Smooth Adversarial Training", arXiv:2006.14536
(2020).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["activations", "canonical_activation", "make_activation"]

# canonical name -> module factory
_FACTORIES: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "softplus": nn.Softplus,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
}

# accepted alias -> canonical name
_ALIASES: dict[str, str] = {"swish": "silu"}


def activations() -> list[str]:
    """List the accepted activation names, aliases included.

    Returns:
        Sorted names, e.g. ``["gelu", "relu", "silu", "softplus", "swish"]``;
        ``"swish"`` is an alias of ``"silu"``.
    """
    return sorted([*_FACTORIES, *_ALIASES])


def canonical_activation(name: str) -> str:
    """Resolve an activation name or alias to its canonical name.

    Args:
        name: One of :func:`activations` (case-insensitive).

    Returns:
        The canonical name (``"swish"`` becomes ``"silu"``).

    Raises:
        ValueError: If the name is not known.
    """
    if not isinstance(name, str):
        raise ValueError(f"activation must be a string, one of {activations()} (got {name!r})")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _FACTORIES:
        raise ValueError(f"Unknown activation {name!r}; allowed: {', '.join(activations())}")
    return key


def make_activation(name: str) -> nn.Module:
    """Build a fresh activation module.

    Args:
        name: One of :func:`activations` (case-insensitive).

    Returns:
        A new, non-in-place activation module.

    Raises:
        ValueError: If the name is not known.
    """
    return _FACTORIES[canonical_activation(name)]()
