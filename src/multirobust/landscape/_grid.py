"""Evaluate a model on many input points in large batches: the engine of every input surface.

Grid points are never materialised all at once: ``build(idx)`` makes the points of one batch
from their flat indices (a gather and two multiply-adds), so memory stays at one batch and the
cost is that of the forward passes themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..threats import LpBall
from ._common import loss_fn

#: ``build(idx) -> (points, centres, labels, clipped)`` for flat point indices ``idx`` (B,):
#: the inputs (B, ...), the clean inputs they belong to (B, ...), their labels (B,) and whether
#: the box clipped each point (B,).
Builder = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass
class GridValues:
    """Per point: each loss, the predicted class, inside the threat's ball, clipped by the box."""

    values: dict[str, np.ndarray]
    pred: np.ndarray
    inside: np.ndarray
    clipped: np.ndarray


def evaluate_points(
    model: nn.Module,
    build: Builder,
    total: int,
    *,
    device: torch.device,
    dtype: torch.dtype,
    names: Sequence[str],
    threat: LpBall | None,
    batch_size: int,
    progress: bool,
    desc: str,
) -> GridValues:
    """Forward ``total`` points in batches of ``batch_size``; the caller sets the model's mode.

    Results stay on the device until the end (no host sync per batch).
    """
    fns = {name: loss_fn(name) for name in names}
    values = {name: torch.empty(total, device=device, dtype=dtype) for name in names}
    pred = torch.empty(total, device=device, dtype=torch.int64)
    inside = torch.ones(total, device=device, dtype=torch.bool)
    clipped = torch.empty(total, device=device, dtype=torch.bool)
    with tqdm(total=total, desc=desc, unit="pt", disable=not progress, leave=False) as bar:
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            idx = torch.arange(start, stop, device=device)
            points, centres, labels, was_clipped = build(idx)
            with torch.no_grad():
                logits = model(points)
                for name, fn in fns.items():
                    values[name][start:stop] = fn(logits, labels)
                pred[start:stop] = logits.argmax(1)
                if threat is not None:
                    inside[start:stop] = threat.contains(points, centres)
            clipped[start:stop] = was_clipped
            bar.update(stop - start)
    return GridValues(
        values={k: v.cpu().numpy() for k, v in values.items()},
        pred=pred.cpu().numpy(),
        inside=inside.cpu().numpy(),
        clipped=clipped.cpu().numpy(),
    )


def clean_logits(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The model's logits on the clean inputs, checked to be (N, C) with labels in range.

    Run before any grid so that a model or label problem is reported before the long work.
    """
    with torch.no_grad():
        logits = model(x)
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != len(x):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"The model must return (N, C) logits, got {shape}")
    if int(y.min()) < 0 or int(y.max()) >= logits.shape[1]:
        raise ValueError(
            f"Labels out of range: {int(y.min())}..{int(y.max())} "
            f"(the model has {logits.shape[1]} classes)"
        )
    return logits
