"""Run folders that resume: one ``config.json`` of settings, checked before any work.

Every long command of multirobust writes into one output folder and resumes from it. Two
things must be refused before work starts: reusing a folder that already holds a run without
``--resume`` (its results would be overwritten), and resuming with settings that differ from
the interrupted run's (the resumed parts would mix two experiments). :func:`claim` does both
and names the settings that differ.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

__all__ = ["changed_settings", "claim"]


def changed_settings(
    before: Mapping[str, Any], now: Mapping[str, Any], free: Collection[str] = ()
) -> list[str]:
    """The settings of ``now`` whose value differs from ``before`` (those ``before`` lacks, and
    those in ``free``, which may change on resumption, excepted), sorted."""
    return sorted(k for k in now if k not in free and before.get(k, now[k]) != now[k])


def claim(
    out: str | Path,
    settings: Mapping[str, Any],
    *,
    kind: str,
    resume: bool,
    free: Collection[str] = (),
    error: type[Exception] = ValueError,
) -> None:
    """Check that ``out`` may receive a run of ``kind`` with these settings.

    ``out/config.json`` absent: a new run, nothing to check. Present: allowed only with
    ``resume`` and when no setting outside ``free`` changed.

    Raises:
        error: (with a message naming the folder, and the changed settings with their old and
            new values) when the folder holds a run and ``resume`` is off, when its settings
            differ, or when its ``config.json`` is unreadable.
    """
    out = Path(out)
    path = out / "config.json"
    if not path.exists():
        return
    if not resume:
        raise error(
            f"{out} already holds a {kind}: resume it (--resume) or choose another output folder"
        )
    try:
        before = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise error(f"Cannot resume {out}: its config.json is unreadable ({err})") from None
    if not isinstance(before, dict):
        raise error(f"Cannot resume {out}: its config.json holds no settings")
    changed = changed_settings(before, settings, free)
    if changed:
        raise error(
            f"Cannot resume {out}: settings differ from the interrupted run ("
            + ", ".join(f"{k}: {before.get(k)!r} -> {settings[k]!r}" for k in changed)
            + ")"
        )
