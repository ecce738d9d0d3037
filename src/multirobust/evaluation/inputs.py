"""What an evaluation takes: data in three forms, moved to the model, and its seeds."""

from __future__ import annotations

import logging
import zlib
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..data import ImageDataset

log = logging.getLogger(__name__)

#: Images (with labels given separately), an ImageDataset, or a DataLoader of (images, labels).
DataArg = torch.Tensor | ImageDataset | DataLoader[Any]


def stable_seed(*parts: Any) -> int:
    """A stable 31-bit seed from the parts (crc32 of their text: same in every process)."""
    return zlib.crc32("|".join(str(p) for p in parts).encode()) & 0x7FFFFFFF


def as_tensors(data: DataArg, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y) from tensors, an ImageDataset or a DataLoader of (images, labels) batches."""
    if isinstance(data, ImageDataset):
        return data.images, data.labels
    if isinstance(data, DataLoader):
        xs, ys = [], []
        for batch in data:
            if not isinstance(batch, list | tuple) or len(batch) < 2:
                raise TypeError("The DataLoader must yield (images, labels) batches")
            xs.append(batch[0])
            ys.append(batch[1])
        if not xs:
            raise ValueError("The DataLoader yielded no batches")
        return torch.cat(xs), torch.cat(ys)
    if isinstance(data, torch.Tensor):
        if y is None:
            raise ValueError("Labels y are required when the data is a tensor")
        return data, y
    raise TypeError(
        "Data must be a tensor (with y), an ImageDataset or a DataLoader, "
        f"got {type(data).__name__}"
    )


def on_model(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` and ``y`` on the model's device, ``x`` in the dtype of its parameters.

    Moving data to the model's device is what every evaluation does; a change of dtype (float64
    images for a float32 model) is logged, since it changes what is attacked.
    """
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    if param is None:
        return x, y.to(device=x.device, dtype=torch.long)
    if x.is_floating_point() and x.dtype != param.dtype:
        log.warning(
            "converted the %s inputs to the model's %s (attacks run in the model's dtype)",
            x.dtype,
            param.dtype,
        )
        x = x.to(dtype=param.dtype)
    return x.to(param.device), y.to(device=param.device, dtype=torch.long)
