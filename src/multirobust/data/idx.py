"""Reader for IDX files (MNIST, Fashion-MNIST), gzip-compressed or not.

The format: a big-endian header ``00 00 TT DD`` (TT = element type, 0x08 for unsigned bytes,
DD = number of dimensions), then one big-endian uint32 per dimension, then the elements,
row-major. Image files are ``0x00000803`` (N x rows x cols), label files ``0x00000801`` (N).
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from .errors import DataCorruptError

__all__ = [
    "IMAGES_MAGIC",
    "LABELS_MAGIC",
    "parse_idx",
    "read_idx",
    "read_idx_images",
    "read_idx_labels",
]

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801
_UBYTE = 0x08


def _read_bytes(path: Path) -> bytes:
    """Read a file, decompressing it if its name ends in ``.gz``.

    Args:
        path: the file.

    Returns:
        The (decompressed) content.
    """
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError as exc:
        raise DataCorruptError(f"{path}: truncated gzip file ({exc})") from exc
    except (OSError, zlib.error) as exc:  # gzip.BadGzipFile (CRC, magic) is an OSError
        raise DataCorruptError(f"{path}: corrupt gzip file ({exc})") from exc


def parse_idx(data: bytes, source: str, magic: int) -> np.ndarray:
    """Parse an unsigned-byte IDX file from memory.

    Args:
        data: the uncompressed file content.
        source: what to call the data in error messages (usually the path).
        magic: the expected magic number, `IMAGES_MAGIC` or `LABELS_MAGIC`.

    Returns:
        A read-only uint8 array viewing ``data``, shaped as the header says.

    Raises:
        DataCorruptError: on a wrong magic number, a short header or a payload whose length is
            not exactly the product of the dimensions.
    """
    if len(data) < 4:
        raise DataCorruptError(f"{source}: file is {len(data)} bytes, too short for an IDX header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        kind = "image" if magic == IMAGES_MAGIC else "label"
        hint = " (element type is not unsigned byte)" if (found >> 8) & 0xFF != _UBYTE else ""
        raise DataCorruptError(
            f"{source}: wrong magic number 0x{found:08x}, expected 0x{magic:08x} "
            f"for an IDX {kind} file{hint}"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataCorruptError(
            f"{source}: file is {len(data)} bytes, too short for its {header}-byte IDX header"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    # Python integers: three uint32 dimensions can multiply past int64, and a product that
    # wrapped around could match the payload's length and pass this check.
    expected = math.prod(dims)
    payload = len(data) - header
    if payload != expected:
        shape = " x ".join(str(d) for d in dims)
        problem = "short" if payload < expected else "too long"
        raise DataCorruptError(
            f"{source}: payload {problem}: {payload} bytes after the header, "
            f"expected {expected} for shape {shape}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(path: str | os.PathLike[str], magic: int) -> np.ndarray:
    """Read one IDX file from disk (``.gz`` files are decompressed).

    Args:
        path: the file.
        magic: the expected magic number, `IMAGES_MAGIC` or `LABELS_MAGIC`.

    Returns:
        A read-only uint8 array shaped as the header says.

    Raises:
        DataCorruptError: if the file cannot be decompressed or parsed.
    """
    p = Path(path)
    return parse_idx(_read_bytes(p), str(p), magic)


def read_idx_images(
    path: str | os.PathLike[str], image_size: tuple[int, int] | None = None
) -> np.ndarray:
    """Read an IDX image file.

    Args:
        path: the file (``*-images-idx3-ubyte`` or ``.gz``).
        image_size: the expected ``(rows, cols)``, or None to accept any.

    Returns:
        A read-only uint8 array.

    Shape:
        ``(N, rows, cols)``.
    """
    images = read_idx(path, IMAGES_MAGIC)
    if image_size is not None and images.shape[1:] != tuple(image_size):
        raise DataCorruptError(
            f"{path}: images are {images.shape[1]} x {images.shape[2]}, "
            f"expected {image_size[0]} x {image_size[1]}"
        )
    return images


def read_idx_labels(path: str | os.PathLike[str], num_classes: int | None = None) -> np.ndarray:
    """Read an IDX label file.

    Args:
        path: the file (``*-labels-idx1-ubyte`` or ``.gz``).
        num_classes: if given, every label must be below it.

    Returns:
        A read-only uint8 array.

    Shape:
        ``(N,)``.
    """
    labels = read_idx(path, LABELS_MAGIC)
    if num_classes is not None and labels.size and int(labels.max()) >= num_classes:
        bad = int(np.argmax(labels >= num_classes))
        raise DataCorruptError(
            f"{path}: label {int(labels[bad])} at index {bad} is out of range "
            f"(must be 0..{num_classes - 1})"
        )
    return labels
