"""Reader for the CIFAR-10 python batches, with a restricted unpickler and safe tar extraction.

Each batch is a pickled dict with ``b"data"`` (N x 3072 uint8: 1024 red, 1024 green, 1024 blue
values, each plane row-major 32 x 32) and ``b"labels"`` (N ints). ``batches.meta`` holds
``b"label_names"``. Pickle can run arbitrary code, so the unpickler here resolves only the
three numpy callables an ndarray needs and refuses every other global.
"""

from __future__ import annotations

import gzip
import io
import logging
import os
import pickle
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from .errors import DataCorruptError

__all__ = [
    "BATCH_FOLDER",
    "META_FILE",
    "TEST_BATCHES",
    "TRAIN_BATCHES",
    "batches_for",
    "extract_archive",
    "read_batch",
    "read_batches",
    "read_meta",
    "safe_unpickle",
]

logger = logging.getLogger(__name__)

BATCH_FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES: tuple[str, ...] = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES: tuple[str, ...] = ("test_batch",)
META_FILE = "batches.meta"

_IMAGE_BYTES = 3 * 32 * 32


def _numpy_reconstruct() -> Callable[..., Any]:
    """Find numpy's ndarray pickle helper without importing the deprecated ``numpy.core``."""
    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return _reconstruct  # type: ignore[no-any-return]


def _allowed_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR batch may name: what numpy needs to rebuild an ndarray."""
    reconstruct = _numpy_reconstruct()
    return {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }


class _ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle names a class or function outside the allowed set."""


class _RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the numpy ndarray helpers and refuses all else."""

    def __init__(self, file: io.BufferedIOBase, allowed: dict[tuple[str, str], Any]) -> None:
        super().__init__(file, encoding="bytes")
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise _ForbiddenGlobal(
                f"refusing to load global '{module}.{name}' (only numpy array "
                "reconstruction is allowed in a CIFAR batch)"
            ) from None


def safe_unpickle(data: bytes, source: str) -> Any:
    """Unpickle CIFAR data while refusing any class or function but numpy's array helpers.

    Args:
        data: the pickle bytes.
        source: what to call the data in error messages (usually the path).

    Returns:
        The unpickled object; strings come back as ``bytes`` (``encoding="bytes"``).

    Raises:
        DataCorruptError: if the pickle is damaged or names a forbidden global.
    """
    try:
        return _RestrictedUnpickler(io.BytesIO(data), _allowed_globals()).load()
    except _ForbiddenGlobal as exc:
        raise DataCorruptError(f"{source}: unsafe pickle: {exc}") from exc
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
    ) as exc:
        raise DataCorruptError(f"{source}: damaged pickle ({type(exc).__name__}: {exc})") from exc


def read_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 batch file.

    Args:
        path: e.g. ``.../cifar-10-batches-py/test_batch``.

    Returns:
        ``(images, labels)``: uint8 images and int64 labels.

    Shape:
        images ``(N, 3, 32, 32)``, labels ``(N,)``.

    Raises:
        DataCorruptError: if the pickle is unsafe or damaged, or keys, shapes or types are wrong.
    """
    p = Path(path)
    obj = safe_unpickle(p.read_bytes(), str(p))
    if not isinstance(obj, dict):
        raise DataCorruptError(f"{p}: expected a dict, got {type(obj).__name__}")
    missing = [k for k in (b"data", b"labels") if k not in obj]
    if missing:
        raise DataCorruptError(
            f"{p}: missing key(s) {', '.join(repr(k) for k in missing)} "
            f"(found: {', '.join(repr(k) for k in obj)})"
        )
    data = obj[b"data"]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or (data.shape[1] != _IMAGE_BYTES)
    ):
        desc = (
            f"{data.dtype} array of shape {data.shape}"
            if isinstance(data, np.ndarray)
            else (type(data).__name__)
        )
        raise DataCorruptError(f"{p}: b'data' must be a uint8 N x {_IMAGE_BYTES} array, got {desc}")
    try:
        labels = np.asarray(obj[b"labels"])
    except (TypeError, ValueError) as exc:
        raise DataCorruptError(f"{p}: b'labels' is not a list of integers ({exc})") from exc
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataCorruptError(
            f"{p}: b'labels' must be a flat list of integers, got {labels.dtype} of shape "
            f"{labels.shape}"
        )
    if len(labels) != len(data):
        raise DataCorruptError(
            f"{p}: {len(data)} images but {len(labels)} labels (counts must match)"
        )
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def read_meta(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Read the class names from ``batches.meta``.

    Args:
        path: the ``batches.meta`` file.

    Returns:
        The label names, decoded as UTF-8.
    """
    p = Path(path)
    obj = safe_unpickle(p.read_bytes(), str(p))
    if not isinstance(obj, dict) or b"label_names" not in obj:
        raise DataCorruptError(f"{p}: expected a dict with key b'label_names'")
    names = obj[b"label_names"]
    if not isinstance(names, list) or not all(isinstance(n, bytes | str) for n in names):
        raise DataCorruptError(f"{p}: b'label_names' must be a list of strings")
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else n for n in names)


def batches_for(split: str) -> tuple[str, ...]:
    """The batch file names that make up a split.

    Args:
        split: ``"train"`` or ``"test"``.

    Returns:
        File names inside `BATCH_FOLDER`.
    """
    return TRAIN_BATCHES if split == "train" else TEST_BATCHES


def read_batches(
    paths: Sequence[Path], num_classes: int, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read and concatenate batches, stopping once ``limit`` examples are read.

    Args:
        paths: the batch files, in order.
        num_classes: every label must be below it.
        limit: the number of examples to keep, or None for all.

    Returns:
        ``(images, labels)``: uint8 ``(N, 3, 32, 32)`` and int64 ``(N,)``.
    """
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    count = 0
    for path in paths:
        x, y = read_batch(path)
        if y.size and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            bad = int(np.argmax((y < 0) | (y >= num_classes)))
            raise DataCorruptError(
                f"{path}: label {int(y[bad])} at index {bad} is out of range "
                f"(must be 0..{num_classes - 1})"
            )
        images.append(x)
        labels.append(y)
        count += len(y)
        if limit is not None and count >= limit:
            break
    if not images:
        return np.zeros((0, 3, 32, 32), np.uint8), np.zeros((0,), np.int64)
    return np.concatenate(images)[:limit], np.concatenate(labels)[:limit]


def _check_member(member: tarfile.TarInfo, archive: Path) -> PurePosixPath | None:
    """Validate one archive member's name and type; None means skip it (a directory)."""
    name = member.name
    path = PurePosixPath(name)
    if name.startswith(("/", "\\")) or path.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise DataCorruptError(f"{archive}: refusing member with an absolute path: {name!r}")
    if ".." in path.parts or "\\" in name:
        raise DataCorruptError(f"{archive}: refusing member that leaves the folder: {name!r}")
    if member.isdir():
        return None
    if not member.isfile():
        raise DataCorruptError(
            f"{archive}: refusing member {name!r}: only regular files and folders are allowed "
            "(links and devices are not)"
        )
    parts = [p for p in path.parts if p not in ("", ".")]
    if not parts:
        return None
    return PurePosixPath(*parts)


def extract_archive(archive: Path, dest: Path) -> list[Path]:
    """Extract a ``.tar.gz`` safely: every name is checked before anything is written.

    Members with absolute paths, ``..`` components, links or device files are refused. Each
    file is written to a temporary file in its target folder, then moved into place, so an
    interrupted extraction never leaves a half-written batch under its final name.

    Args:
        archive: the tarball, e.g. ``cifar-10-python.tar.gz``.
        dest: the folder to extract into.

    Returns:
        The paths of the extracted files.

    Raises:
        DataCorruptError: if the archive is damaged or holds an unsafe member.
    """
    written: list[Path] = []
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            plan = [(m, rel) for m in members if (rel := _check_member(m, archive)) is not None]
            logger.info("Extracting %d files from %s into %s", len(plan), archive, dest)
            for member, rel in plan:
                target = dest.joinpath(*rel.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                if src is None:  # pragma: no cover - regular files always have data
                    raise DataCorruptError(f"{archive}: cannot read member {member.name!r}")
                fd, tmp = tempfile.mkstemp(
                    dir=target.parent, prefix=f".{target.name}.", suffix=".part"
                )
                try:
                    with os.fdopen(fd, "wb") as out, src:
                        while chunk := src.read(1 << 20):
                            out.write(chunk)
                    os.replace(tmp, target)
                except BaseException:
                    Path(tmp).unlink(missing_ok=True)
                    raise
                written.append(target)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise DataCorruptError(f"{archive}: cannot extract ({type(exc).__name__}: {exc})") from exc
    return written
