"""Landscape grids as ``.npz`` files: plain numeric and text arrays, no pickles, atomic writes."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping

import numpy as np

from ..atomic import write_bytes_atomic

__all__ = ["load_npz", "save_npz"]


def save_npz(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` as a compressed ``.npz`` atomically (readers never see half a file).

    Raises:
        ValueError: an array holds Python objects (it would need a pickle to load).
    """
    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise ValueError(f"Array {key!r} holds Python objects; only plain arrays are saved")
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
    write_bytes_atomic(path, buf.getvalue())


def load_npz(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a ``.npz`` written by :func:`save_npz` (``allow_pickle=False``: never unpickles)."""
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}
