"""Per-channel input normalisation as the first layer of a model.

Models in :mod:`multirobust.models` take raw images in ``[0, 1]``; attacks and threat models
work in that pixel space. The dataset's mean/std standardisation therefore lives inside the
network, as this layer, rather than in the data pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["Normalize"]


def _as_floats(values: Sequence[float], what: str) -> tuple[float, ...]:
    """Check that ``values`` is a non-empty sequence of finite numbers; return it as floats."""
    if isinstance(values, str | bytes):
        raise ValueError(f"{what} must be a sequence of numbers, one per channel (got {values!r})")
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{what} must contain only numbers (got {values!r})") from e
    if not out:
        raise ValueError(f"{what} must have one value per channel (got an empty sequence)")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{what} must contain only finite numbers (got {out})")
    return out


class Normalize(nn.Module):
    """Standardise images channel by channel: ``(x - mean) / std``.

    With ``mean`` and ``std`` both ``None`` the layer is the identity (and has no buffers).
    Otherwise both are stored as buffers of shape ``(1, C, 1, 1)``, so they follow the model
    across ``.to(device)`` and are saved in its ``state_dict``.

    Args:
        mean: Per-channel means, or ``None``.
        std: Per-channel standard deviations (all > 0), or ``None``.

    Raises:
        ValueError: If only one of ``mean``/``std`` is given, their lengths differ, a value is
            not a finite number, or a standard deviation is not positive.
    """

    mean: torch.Tensor | None
    std: torch.Tensor | None

    def __init__(
        self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
    ) -> None:
        super().__init__()
        if (mean is None) != (std is None):
            raise ValueError("Normalize needs both mean and std, or neither (identity)")
        if mean is None or std is None:
            self.num_channels: int | None = None
            self.register_buffer("mean", None)
            self.register_buffer("std", None)
            return
        mean_f = _as_floats(mean, "mean")
        std_f = _as_floats(std, "std")
        if len(mean_f) != len(std_f):
            raise ValueError(
                f"mean and std must have the same length, one value per channel "
                f"(got {len(mean_f)} and {len(std_f)})"
            )
        if any(s <= 0 for s in std_f):
            raise ValueError(f"std must be > 0 for every channel (got {std_f})")
        self.num_channels = len(mean_f)
        self.register_buffer("mean", torch.tensor(mean_f, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std_f, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a batch.

        Args:
            x: Images of shape ``(N, C, H, W)``, values in ``[0, 1]``.

        Returns:
            ``(x - mean) / std``, or ``x`` itself for the identity layer.
        """
        if self.mean is None or self.std is None:
            return x
        if x.dim() != 4 or x.shape[1] != self.mean.shape[1]:
            raise ValueError(
                f"Normalize expects images of shape (N, {self.mean.shape[1]}, H, W), "
                f"got {tuple(x.shape)}"
            )
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        if self.mean is None or self.std is None:
            return "identity"
        mean = [round(v, 4) for v in self.mean.flatten().tolist()]
        std = [round(v, 4) for v in self.std.flatten().tolist()]
        return f"mean={mean}, std={std}"
