"""Atomic file writes: readers see the old file or the complete new one, never half of one.

Every long command saves through these, so an interruption (Ctrl-C, a killed job, a full disk)
never leaves a truncated JSON, report or database file behind.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

__all__ = [
    "check_writable_dir",
    "remove_stale_temps",
    "write_atomic",
    "write_bytes_atomic",
    "write_json_atomic",
]

# ".<name>.<pid>.<8 hex digits>.tmp", as _temp_sibling (and models.save) name them.
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.(?P<token>[0-9a-f]{8})\.tmp$")


def _temp_sibling(path: Path) -> Path:
    # The pid and a random token keep concurrent writers (torchrun ranks, threads) apart; the
    # leading dot and the .tmp suffix let a resume find and remove leftovers of a crash.
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling, fsync and a rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(target)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`write_bytes_atomic`)."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> None:
    """Serialise ``obj`` as JSON and write it atomically; refuses NaN (not valid JSON)."""
    write_atomic(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def check_writable_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` if needed and prove a file can be written there, before long work starts.

    Raises:
        PermissionError / OSError: naming the folder, when it cannot be created or written.
    """
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = _temp_sibling(folder / "write-test")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise type(err)(
            f"Cannot write to the output folder {str(folder)!r}: {err.strerror or err}"
        ) from None
    return folder


def _alive(pid: int) -> bool:
    """Whether a process with this id exists (it may be one the writer's id was reused for)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists, owned by someone else (or we cannot tell: keep the file)
    return True


def remove_stale_temps(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that writers in ``folder`` left behind when they died.

    A file counts as left behind when its name has the form of these writers' temporaries
    (``.<name>.<pid>.<hex>.tmp``) and no process with that id is running; temporaries of
    running processes (another rank still writing) are kept.

    Returns:
        The paths removed.
    """
    removed: list[Path] = []
    root = Path(folder)
    if not root.is_dir():
        return removed
    for path in root.iterdir():
        match = _TEMP.match(path.name)
        if match is None or not path.is_file() or _alive(int(match["pid"])):
            continue
        try:
            path.unlink()
        except FileNotFoundError:  # another process cleaned it first
            continue
        removed.append(path)
    return removed
