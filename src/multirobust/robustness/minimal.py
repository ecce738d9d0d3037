"""Moved to :mod:`multirobust.attacks.minimal` (the minimal-distortion search is a minimum-norm
attack, below evaluation); these names are kept here for existing imports."""

from ..attacks.minimal import (
    DEFAULT_ATTACK_OPTIONS,
    MinimalDistortion,
    MinimalSearch,
    check_norms,
    default_max_eps,
    minimal_distortion,
)

__all__ = [
    "DEFAULT_ATTACK_OPTIONS",
    "MinimalDistortion",
    "MinimalSearch",
    "check_norms",
    "default_max_eps",
    "minimal_distortion",
]
