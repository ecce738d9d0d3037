"""File checksums: hashing in chunks and verifying a file against its `FileSpec`."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from .errors import DataCorruptError
from .registry import FileSpec

__all__ = ["file_digest", "verify_file"]

_CHUNK = 1 << 20

# Files already verified in this process, keyed by what would change if they were rewritten;
# saves re-hashing the same file when a program loads a dataset several times.
_verified: set[tuple[str, int, int, str, str]] = set()
_lock = threading.Lock()


def file_digest(path: str | os.PathLike[str], algorithm: str) -> str:
    """Hash a file in chunks.

    Args:
        path: the file.
        algorithm: a `hashlib` name, e.g. ``"sha256"`` or ``"md5"``.

    Returns:
        The lowercase hex digest.
    """
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def verify_file(path: Path, file_spec: FileSpec) -> None:
    """Check a file's size and checksum against the published ones.

    Args:
        path: the file on disk.
        file_spec: its registry entry; a None size or checksum is not checked.

    Raises:
        DataCorruptError: naming the file, the expected and the actual value, on a mismatch.
    """
    st = path.stat()
    if file_spec.size is not None and st.st_size != file_spec.size:
        raise DataCorruptError(
            f"{path}: size is {st.st_size} bytes, expected {file_spec.size} "
            "(truncated or not the original file; delete it and download it again)"
        )
    checksum = file_spec.checksum
    if checksum is None:
        return
    algorithm, expected = checksum
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, algorithm, expected)
    with _lock:
        if key in _verified:
            return
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise DataCorruptError(
            f"{path}: {algorithm} checksum mismatch: expected {expected}, got {actual} "
            "(corrupt or not the original file; delete it and download it again)"
        )
    with _lock:
        _verified.add(key)
