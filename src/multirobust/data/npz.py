"""Your own examples in a NumPy ``.npz`` file: arrays ``x`` (images) and ``y`` (labels).

Two image layouts are accepted, the two a user is likely to have at hand:

- floating point ``(N, C, H, W)`` with values in [0, 1] (what PyTorch models take), or
- ``uint8`` ``(N, H, W, C)`` with values 0..255 (what images on disk decode to), divided by 255
  and moved to channels-first.

``y`` holds integer labels ``(N,)`` from 0. The file is read with ``allow_pickle=False``, so
it can only hold arrays; anything else about it that is wrong raises a ``ValueError`` that says
what was found and what is allowed.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from .dataset import ImageDataset

__all__ = ["load_npz"]

_CHANNELS = (1, 3)


def _images(x: np.ndarray, source: str) -> torch.Tensor:
    """``x`` as float32 ``(N, C, H, W)`` in [0, 1], checked."""
    if x.ndim != 4:
        raise ValueError(
            f"{source}: x has shape {x.shape} (must be 4-D: N x C x H x W floats in [0, 1], or "
            "N x H x W x C uint8)"
        )
    if x.dtype == np.uint8:
        if x.shape[3] not in _CHANNELS:
            raise ValueError(
                f"{source}: uint8 x has shape {x.shape}; uint8 images must be N x H x W x C "
                f"(channels last) with C in {_CHANNELS}"
            )
        return torch.from_numpy(x.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"{source}: x has dtype {x.dtype} (must be floating point in [0, 1], channels "
            "first, or uint8 0..255, channels last)"
        )
    if x.shape[1] not in _CHANNELS:
        raise ValueError(
            f"{source}: float x has shape {x.shape}; float images must be N x C x H x W "
            f"(channels first) with C in {_CHANNELS}"
        )
    images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if images.numel():
        if not bool(torch.isfinite(images).all()):
            raise ValueError(f"{source}: x holds NaN or infinite values (must be in [0, 1])")
        low, high = float(images.min()), float(images.max())
        if low < 0.0 or high > 1.0:
            hint = " (0..255 values? store them as uint8, channels last)" if high > 1.0 else ""
            raise ValueError(
                f"{source}: x has values in [{low:g}, {high:g}] (must be in [0, 1]){hint}"
            )
    return images


def _labels(y: np.ndarray, n: int, source: str, num_classes: int | None) -> torch.Tensor:
    """``y`` as int64 ``(N,)`` in 0..num_classes-1, checked."""
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{source}: y has shape {y.shape} (must be ({n},), one label per image)")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{source}: y has dtype {y.dtype} (must be integer class labels)")
    labels = torch.from_numpy(y.astype(np.int64))
    if n:
        low, high = int(labels.min()), int(labels.max())
        if low < 0:
            raise ValueError(f"{source}: y holds the label {low} (labels must be >= 0)")
        if num_classes is not None and high >= num_classes:
            raise ValueError(
                f"{source}: y holds the label {high} but there are {num_classes} classes "
                f"(labels must be in 0..{num_classes - 1})"
            )
    return labels


def load_npz(
    path: str | os.PathLike[str], *, limit: int | None = None, num_classes: int | None = None
) -> ImageDataset:
    """Load the examples of an ``.npz`` file as an :class:`ImageDataset`.

    Args:
        path: a file written by ``np.savez`` / ``np.savez_compressed`` with arrays ``x``, ``y``.
        limit: keep only the first ``limit`` examples.
        num_classes: the model's number of classes (labels must be below it); default one
            more than the largest label.

    Returns:
        An :class:`ImageDataset` named after the file, split ``"file"``.

    Shape:
        images ``(N, C, H, W)`` float32 in [0, 1], labels ``(N,)`` int64.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: for a file that is not an npz, misses ``x`` or ``y``, or whose arrays have
            the wrong shape, dtype or range.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"Data file not found: {p}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"Invalid limit: {limit!r} (must be an int >= 0 or None)")
    source = str(p)
    try:
        archive = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{source} is not a readable .npz file of arrays ({err})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{source} holds one array, not an .npz archive with x and y")
    with archive:
        missing = [k for k in ("x", "y") if k not in archive.files]
        if missing:
            raise ValueError(
                f"{source} has no array {' or '.join(missing)} (it has: "
                f"{', '.join(archive.files) or 'none'}; write it with np.savez(path, x=..., "
                "y=...))"
            )
        try:
            x, y = archive["x"], archive["y"]
        except ValueError as err:  # object arrays: they would need pickle
            raise ValueError(
                f"{source}: x or y is an object array, which needs pickle (refused: it could "
                f"run code); store them as numeric arrays ({err})"
            ) from None
    if limit is not None:
        x, y = x[:limit], y[:limit]
    images = _images(x, source)
    labels = _labels(y, images.shape[0], source, num_classes)
    classes = (
        num_classes if num_classes is not None else int(labels.max()) + 1 if len(labels) else 1
    )
    return ImageDataset(
        name=p.name,
        split="file",
        images=images,
        labels=labels,
        num_classes=classes,
        class_names=tuple(str(i) for i in range(classes)),
    )
