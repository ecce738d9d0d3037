"""The resume store: one JSON file per finished batch, reused by a later run with the same
settings; a damaged file is named and its batch run again."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..atomic import write_atomic
from .records import BatchRecord

log = logging.getLogger(__name__)

#: Settings that do not change a batch's result (where and by how many processes it ran).
_PLACEMENT = ("device", "world_size")


class ResumeStore:
    """Finished batches of one evaluation in ``folder`` (``batch_00000.json``, ...).

    Args:
        folder: created if missing; must hold results of the same settings if it exists.
        settings: the evaluation's settings (compared with ``settings.json``).
    """

    def __init__(self, folder: str | Path, settings: dict[str, Any]) -> None:
        self.folder = Path(folder)
        keep = {k: v for k, v in settings.items() if k not in _PLACEMENT}
        path = self.folder / "settings.json"
        if path.exists():
            try:
                old = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"{path} is not valid JSON ({err}): delete it (and the batches beside it) "
                    "or use another folder"
                ) from None
            diff = sorted(k for k in set(old) | set(keep) if old.get(k) != keep.get(k))
            if diff:
                raise ValueError(
                    f"resume_dir {self.folder} holds results of a different evaluation (differs "
                    f"in: {', '.join(diff)}); use another folder or delete it"
                )
        else:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(keep, indent=1))

    def path(self, batch: int) -> Path:
        return self.folder / f"batch_{batch:05d}.json"

    def load(self, batch: int, *, n: int, threats: list[str]) -> BatchRecord | None:
        """The saved record of ``batch`` (``n`` examples), or None if it must be (re)computed:
        not saved yet, or damaged (then a warning names the file)."""
        path = self.path(batch)
        if not path.exists():
            return None
        try:
            return BatchRecord.from_json(path.read_text(), n=n, threats=threats)
        except (ValueError, OSError, UnicodeDecodeError) as err:
            log.warning("%s is damaged (%s); running batch %d again", path, err, batch)
            return None

    def save(self, batch: int, record: BatchRecord) -> None:
        write_atomic(self.path(batch), record.to_json())
