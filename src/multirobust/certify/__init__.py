"""Certified robustness: randomized smoothing and bound propagation, per threat and union."""

from __future__ import annotations

from .crown import crown_margins
from .ibp import Bounds, interval_bounds, margin_bounds
from .layers import UnsupportedLayerError, flatten

__all__ = [
    "Bounds",
    "UnsupportedLayerError",
    "crown_margins",
    "flatten",
    "interval_bounds",
    "margin_bounds",
]
