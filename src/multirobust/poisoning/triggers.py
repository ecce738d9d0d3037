"""Backdoor triggers: a patch stamped in a corner (BadNets) and an image blended in (Blended).

A trigger is a pure function of the input batch: ``trigger.apply(x)`` returns a new tensor and
never changes ``x``. Its parameters are checked against the image shape with
``trigger.check(shape)`` before any work starts, so a patch larger than the image fails at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

__all__ = ["BlendTrigger", "PatchTrigger", "Trigger", "trigger_from_dict"]

POSITIONS = ("bottom-right", "bottom-left", "top-right", "top-left")
PATTERNS = ("white", "checkerboard")


class Trigger(ABC):
    """What every trigger offers: a shape check, the stamping function and a JSON form."""

    kind: ClassVar[str]

    @abstractmethod
    def check(self, shape: tuple[int, ...]) -> None:
        """Raise ``ValueError`` when the trigger cannot be applied to images of ``(C, H, W)``."""

    @abstractmethod
    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The triggered images.

        Shape: ``(N, C, H, W)`` in [0, 1] -> the same shape, dtype and device.
        """

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The trigger's settings as JSON-ready values (``trigger_from_dict`` inverts it)."""


@dataclass(frozen=True, kw_only=True)
class PatchTrigger(Trigger):
    """A small square patch in a corner: the BadNets trigger.

    Gu et al., "BadNets: Identifying Vulnerabilities in the Machine Learning Model Supply
    Chain", 2017 (arXiv:1708.06733); BackdoorBench stamps a 3 x 3 white square in the
    bottom-right corner, the default here. The patch replaces the pixels it covers:
    ``x'[..., r:r+s, c:c+s] = P`` with ``P`` all ones (``white``) or alternating ones and zeros
    (``checkerboard``), on every channel.

    Args:
        size: side of the square in pixels (>= 1).
        position: ``bottom-right``, ``bottom-left``, ``top-right`` or ``top-left``.
        margin: pixels between the patch and the image border (>= 0).
        pattern: ``white`` or ``checkerboard``.
        amplitude: pixel value of the bright cells (0, 1]; Turner et al. (2019) lower it to
            make clean-label triggers less visible.
    """

    size: int = 3
    position: str = "bottom-right"
    margin: int = 1
    pattern: str = "white"
    amplitude: float = 1.0
    kind: ClassVar[str] = "patch"

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"Invalid trigger size: {self.size!r} (must be an integer >= 1)")
        if isinstance(self.margin, bool) or not isinstance(self.margin, int) or self.margin < 0:
            raise ValueError(f"Invalid trigger margin: {self.margin!r} (must be an integer >= 0)")
        if self.position not in POSITIONS:
            raise ValueError(
                f"Invalid trigger position: {self.position!r} (allowed: {', '.join(POSITIONS)})"
            )
        if self.pattern not in PATTERNS:
            raise ValueError(
                f"Invalid trigger pattern: {self.pattern!r} (allowed: {', '.join(PATTERNS)})"
            )
        if not 0.0 < float(self.amplitude) <= 1.0:
            raise ValueError(f"Invalid trigger amplitude: {self.amplitude!r} (must be in (0, 1])")

    def check(self, shape: tuple[int, ...]) -> None:
        _, h, w = shape[-3:]
        need = self.size + self.margin
        if need > h or need > w:
            raise ValueError(
                f"Invalid trigger size: {self.size} pixels with margin {self.margin} does not fit "
                f"in {h} x {w} images (size + margin must be at most {min(h, w)})"
            )

    def _box(self, h: int, w: int) -> tuple[slice, slice]:
        s, m = self.size, self.margin
        rows = slice(h - m - s, h - m) if self.position.startswith("bottom") else slice(m, m + s)
        cols = slice(w - m - s, w - m) if self.position.endswith("right") else slice(m, m + s)
        return rows, cols

    def patch(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The ``(size, size)`` patch values."""
        cells = torch.ones(self.size, self.size, dtype=dtype, device=device)
        if self.pattern == "checkerboard":
            i = torch.arange(self.size, device=device)
            cells = ((i[:, None] + i[None, :]) % 2 == 0).to(dtype)
        return cells * float(self.amplitude)

    def mask(self, shape: tuple[int, ...]) -> torch.Tensor:
        """A ``(H, W)`` float mask that is 1 where the patch goes."""
        self.check(shape)
        h, w = shape[-2:]
        m = torch.zeros(h, w)
        rows, cols = self._box(h, w)
        m[rows, cols] = 1.0
        return m

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        self.check(tuple(x.shape))
        out = x.clone()
        rows, cols = self._box(x.shape[-2], x.shape[-1])
        out[..., rows, cols] = self.patch(x.dtype, x.device)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "size": self.size,
            "position": self.position,
            "margin": self.margin,
            "pattern": self.pattern,
            "amplitude": float(self.amplitude),
        }


@dataclass(frozen=True, kw_only=True)
class BlendTrigger(Trigger):
    """A whole-image pattern blended into the input: the Blended trigger.

    Chen et al., "Targeted Backdoor Attacks on Deep Learning Systems Using Data Poisoning",
    2017 (arXiv:1712.05526), blended injection: ``x' = (1 - α)·x + α·k`` with ``k`` a key
    pattern. The key here is uniform random noise in [0, 1] (their random-pattern key) drawn
    from ``torch.Generator().manual_seed(seed)`` for the image shape, so the same seed gives
    the same key on any machine; BackdoorBench uses α = 0.2.

    Args:
        alpha: blend ratio α in (0, 1].
        seed: seed of the key pattern (>= 0).
    """

    alpha: float = 0.2
    seed: int = 0
    kind: ClassVar[str] = "blend"

    def __post_init__(self) -> None:
        if not 0.0 < float(self.alpha) <= 1.0:
            raise ValueError(f"Invalid blend alpha: {self.alpha!r} (must be in (0, 1])")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"Invalid trigger seed: {self.seed!r} (must be an integer >= 0)")

    def check(self, shape: tuple[int, ...]) -> None:
        if len(shape) < 3 or min(shape[-3:]) < 1:
            raise ValueError(f"Invalid image shape for a blend trigger: {tuple(shape)}")

    def key(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The ``(C, H, W)`` key pattern for images of that shape."""
        self.check(shape)
        gen = torch.Generator().manual_seed(self.seed)
        return torch.rand(tuple(shape[-3:]), generator=gen).to(dtype=dtype, device=device)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        k = self.key(tuple(x.shape), x.dtype, x.device)
        a = float(self.alpha)
        return ((1.0 - a) * x + a * k).clamp(0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "alpha": float(self.alpha), "seed": self.seed}


def trigger_from_dict(values: dict[str, Any]) -> Trigger:
    """Rebuild a trigger from :meth:`Trigger.to_dict`'s output.

    Raises:
        ValueError: for an unknown kind or invalid settings.
    """
    values = dict(values)
    kind = values.pop("kind", None)
    if kind == PatchTrigger.kind:
        return PatchTrigger(**values)
    if kind == BlendTrigger.kind:
        return BlendTrigger(**values)
    raise ValueError(f"Unknown trigger kind: {kind!r} (allowed: patch, blend)")
