"""Validation and the loss table shared by the landscape modules."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from .. import losses
from ..threats import LpBall, Threat, ball, parse

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Logit margin max_{i≠y} z_i − z_y, uncapped: > 0 exactly where the prediction is wrong."""
    return losses.margin(logits, y, confidence=float("inf"))


def _ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return losses.cross_entropy(logits, y)


def _dlr(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return losses.dlr(logits, y)


#: Losses a surface can show, all per example and to be maximised by the adversary.
LOSSES: dict[str, LossFn] = {"ce": _ce, "margin": _margin, "dlr": _dlr}


def loss_fn(name: str) -> LossFn:
    """The surface loss called ``name`` (``ce``, ``margin`` or ``dlr``)."""
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"Unknown landscape loss {name!r} (available: {', '.join(sorted(LOSSES))})"
        ) from None


def loss_names(loss: str, extra: Sequence[str]) -> list[str]:
    """``ce`` and ``margin`` always (the class map and the masking evidence read them), then
    ``loss`` and ``extra``, each once, validated."""
    names: list[str] = []
    for name in ("ce", "margin", loss, *extra):
        loss_fn(name)
        if name not in names:
            names.append(name)
    return names


def lp_threat(threat: Threat | str, what: str) -> LpBall:
    """``threat`` (or its text) if it is an ℓp ball with ε > 0, else a clear error.

    The surfaces need a ball with a steepest-ascent direction and a norm; the threat object
    says whether it has them (``additive``), never its class.
    """
    if not isinstance(threat, Threat | str):
        raise TypeError(f"threat must be a Threat or its text, got {type(threat).__name__}")
    tm = parse(threat)
    if not tm.additive:
        raise ValueError(
            f"Unsupported threat for {what}: {tm} (supported: the lp balls linf:EPS, l2:EPS, "
            "l1:EPS; spatial threats, unions and affine combinations have no single ball)"
        )
    lp = ball(tm, who=what)
    if lp.eps <= 0:
        raise ValueError(f"Invalid eps for {what}: {tm} (must be > 0: the ball is one point)")
    return lp


def check_points(name: str, value: Any) -> int:
    """Grid size: an integer >= 2."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 2:
        raise ValueError(f"Invalid {name}: {value!r} (must be an integer >= 2)")
    return value


def check_positive_int(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"Invalid {name}: {value!r} (must be an integer >= 1)")
    return value


def check_positive(name: str, value: Any) -> float:
    """A finite number > 0."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise ValueError(f"Invalid {name}: {value!r} (must be a finite number > 0)")
    return float(value)


def as_batch(x: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """One example (C, H, W) with an integer label, or a batch (N, C, H, W) with (N,) labels,
    as a batch; inputs must be finite floats in the box [0, 1]."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(f"x must be a floating-point torch.Tensor, got {type(x).__name__}")
    if isinstance(y, int) and not isinstance(y, bool):
        y = torch.tensor(y)
    if not isinstance(y, torch.Tensor) or y.is_floating_point() or y.dtype == torch.bool:
        raise TypeError(f"y must be an integer label or a tensor of labels, got {y!r}")
    if y.dim() == 0:
        x, y = x.unsqueeze(0), y.reshape(1)
    if x.dim() < 2 or y.dim() != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y do not match: x {tuple(x.shape)}, y {tuple(y.shape)} (expected one "
            "example (C, H, W) with one label, or (N, C, H, W) with (N,) labels)"
        )
    if x.shape[0] == 0:
        raise ValueError("No examples: x is empty")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    if x.min() < 0 or x.max() > 1:
        raise ValueError(
            f"x has values outside the input box [0, 1] (min {float(x.min()):.4g}, "
            f"max {float(x.max()):.4g}); normalisation belongs inside the model"
        )
    return x.detach(), y.detach().to(device=x.device, dtype=torch.int64)


def cpu_generator(generator: torch.Generator | None, seed: int) -> torch.Generator:
    """The caller's CPU generator, or a fresh one seeded with ``seed``.

    Random directions are drawn on the CPU and then moved, so the same seed gives the same
    directions on every device.
    """
    if generator is None:
        return torch.Generator().manual_seed(int(seed))
    if generator.device.type != "cpu":
        raise ValueError(
            f"generator must be a CPU torch.Generator (directions are drawn on the CPU and "
            f"moved, so a seed means the same on every device), got one on {generator.device}"
        )
    return generator


def randn_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn on the CPU, on ``x``'s device and dtype."""
    return torch.randn(x.shape, generator=generator, dtype=torch.float32).to(x.device, x.dtype)
