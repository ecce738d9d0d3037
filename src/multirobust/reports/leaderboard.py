"""A personal leaderboard: every evaluation a user records, kept in a local SQLite database.

``multirobust compare`` records each report it reads and ``multirobust evaluate --db PATH``
records the report it writes, so a user's models accumulate across runs; ``multirobust
leaderboard`` prints them. The database lives at ``--db`` or, by default,
``$MULTIROBUST_HOME/leaderboard.sqlite`` (else ``$XDG_CACHE_HOME/multirobust/`` or
``~/.cache/multirobust/``).

One evaluation is one row, identified by the model and data fingerprints, the threats, the
preset, the number of examples and the seed: recording the same evaluation again updates its
row instead of adding a duplicate. Every write is one transaction (all of it or nothing), and a
file that is not a multirobust leaderboard is refused with a clear error, never overwritten.

Several processes may record at once (parallel evaluations ending together, a sweep): writes take
the database's write lock at the start of their transaction (``BEGIN IMMEDIATE``), the schema of
a new database is created inside one such transaction after checking again that nobody else
created it first, and a write that still finds the database busy is retried a bounded number of
times.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from ..evaluation.report import EvaluationReport

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "Entry",
    "Leaderboard",
    "LeaderboardError",
    "default_path",
    "format_table",
]

T = TypeVar("T")

#: SQLite ``PRAGMA application_id`` of our databases ("mrlb").
APPLICATION_ID = 0x6D726C62
#: Version 2 added the ``checkpoint`` column; a version-1 database gains it when opened.
SCHEMA_VERSION = 2

#: How long one statement waits for another process's lock, and how often a write that still
#: finds the database busy is tried again (with a growing pause) before giving up.
BUSY_TIMEOUT_S = 30.0
BUSY_RETRIES = 5

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    report_path TEXT,
    dataset TEXT,
    n INTEGER NOT NULL,
    preset TEXT,
    seed INTEGER,
    threats TEXT NOT NULL,
    clean_accuracy REAL NOT NULL,
    union_accuracy REAL NOT NULL,
    robust_accuracy TEXT NOT NULL,
    min_distortion TEXT NOT NULL,
    model_sha256 TEXT,
    data_sha256 TEXT,
    checkpoint TEXT
)
"""


class LeaderboardError(RuntimeError):
    """The leaderboard database cannot be used; the message says why and what to do."""


def default_path() -> Path:
    """Where the leaderboard lives when no ``--db`` is given."""
    home = os.environ.get("MULTIROBUST_HOME")
    if home:
        return Path(home).expanduser() / "leaderboard.sqlite"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "multirobust" / "leaderboard.sqlite"


@dataclass
class Entry:
    """One recorded evaluation.

    Attributes:
        label: the run folder (or report file) it was recorded from.
        clean_accuracy, union_accuracy: fractions.
        robust_accuracy: threat text -> fraction.
        min_distortion: norm -> median minimal distortion (inf: most examples never broken).
        threats: the threat models evaluated.
        dataset, n, preset, seed: how it was evaluated.
        report_path: the report.json it came from, when known.
        model_sha256, data_sha256: fingerprints of the weights and the data.
        recorded_at: UTC time of the (last) recording, ISO 8601.
        checkpoint: the model as the evaluation named it (``--checkpoint`` path, or the
            ``--model`` factory), when the report records it.
    """

    label: str
    clean_accuracy: float
    union_accuracy: float
    robust_accuracy: dict[str, float] = field(default_factory=dict)
    min_distortion: dict[str, float] = field(default_factory=dict)
    threats: list[str] = field(default_factory=list)
    dataset: str | None = None
    n: int = 0
    preset: str | None = None
    seed: int | None = None
    report_path: str | None = None
    model_sha256: str | None = None
    data_sha256: str | None = None
    recorded_at: str = ""
    checkpoint: str | None = None

    @property
    def model(self) -> str:
        """The model's name: its checkpoint, else (older records) the run folder."""
        return self.checkpoint or self.label

    @property
    def key(self) -> str:
        """Identity of the evaluation (same model, data, threats, preset, n and seed)."""
        parts = [
            self.model_sha256 or f"label:{self.label}",
            self.data_sha256 or f"dataset:{self.dataset}",
            sorted(self.threats),
            self.preset,
            self.n,
            self.seed,
        ]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]

    @classmethod
    def from_report(
        cls, report: EvaluationReport, label: str, report_path: str | os.PathLike[str] | None = None
    ) -> Entry:
        """The entry of an evaluation report."""
        s = report.settings
        preset = s.get("preset")
        return cls(
            label=label,
            clean_accuracy=float(report.clean_accuracy),
            union_accuracy=float(report.union_accuracy),
            robust_accuracy={k: float(v) for k, v in report.robust_accuracy.items()},
            min_distortion={
                norm: float(md["median"]) for norm, md in report.minimal_distortion.items()
            },
            threats=list(s.get("threats", report.threats.keys())),
            dataset=s.get("dataset"),
            n=int(report.n),
            preset=preset.get("name") if isinstance(preset, dict) else preset,
            seed=s.get("seed"),
            report_path=None if report_path is None else str(Path(report_path).resolve()),
            model_sha256=s.get("model_sha256"),
            data_sha256=s.get("data_sha256"),
            checkpoint=s.get("checkpoint"),
        )


def _json_float(value: float) -> Any:
    """inf as the string "inf": SQLite's JSON text must stay standard JSON."""
    return value if math.isfinite(value) else str(value)


def _busy(err: sqlite3.Error) -> bool:
    """Whether ``err`` says another process holds the lock (worth trying again)."""
    text = str(err).lower()
    return isinstance(err, sqlite3.OperationalError) and ("locked" in text or "busy" in text)


class Leaderboard:
    """The leaderboard database at ``path`` (created on first use).

    Use as a context manager, or call :meth:`close`. Safe to open and write from several
    processes at once.

    Raises:
        LeaderboardError: the file is not an SQLite database, or is one of another program.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        if self.path.is_dir():
            raise LeaderboardError(f"Leaderboard path {self.path} is a folder, not a file")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Autocommit mode: every transaction is opened explicitly (_write), so it can take
            # the write lock before it reads what it is about to change.
            self._conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as err:
            raise LeaderboardError(f"Cannot open leaderboard {self.path}: {err}") from None
        try:
            self._retry(self._initialise)
        except sqlite3.DatabaseError as err:
            self._conn.close()
            raise LeaderboardError(
                f"{self.path} is not a usable multirobust leaderboard database ({err}): the "
                "file is corrupt or belongs to another program. Move it away or pass another "
                "path with --db."
            ) from None
        except LeaderboardError:
            self._conn.close()
            raise

    def _retry(self, action: Callable[[], T]) -> T:
        """``action()``, tried again after a pause while the database stays busy."""
        for attempt in range(BUSY_RETRIES):
            try:
                return action()
            except sqlite3.Error as err:
                if not _busy(err) or attempt == BUSY_RETRIES - 1:
                    raise
                time.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction holding the write lock from its first statement; rolled back on
        any exception."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _identity(self) -> tuple[int, set[str]]:
        """The database's application id and table names, read in one snapshot."""
        conn = self._conn
        # Outside a transaction each statement would see the database as it is then: a
        # schema committed between the two reads would look like a foreign database.
        own = not conn.in_transaction
        if own:
            conn.execute("BEGIN")
        try:
            app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        finally:
            if own:
                conn.execute("COMMIT")
        return app_id, tables

    def _initialise(self) -> None:
        app_id, tables = self._identity()
        if app_id == 0 and not tables:
            # A new database. Another process may have found it empty too: whoever takes the
            # write lock first creates the schema, the other sees it when it looks again
            # inside its own transaction.
            with self._write() as conn:
                app_id, tables = self._identity()
                if app_id == 0 and not tables:
                    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                    conn.execute(_SCHEMA)
                    return
        if app_id != APPLICATION_ID or "results" not in tables:
            raise LeaderboardError(
                f"{self.path} is an SQLite database of another program (application id "
                f"{app_id:#x}, tables: {', '.join(sorted(tables)) or 'none'}), not a multirobust "
                "leaderboard. Pass another path with --db."
            )
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 1:
            version = self._migrate_from_1()
        if version != SCHEMA_VERSION:
            raise LeaderboardError(
                f"{self.path} is a multirobust leaderboard of schema version {version}; this "
                f"version of multirobust reads version {SCHEMA_VERSION}"
            )

    def _migrate_from_1(self) -> int:
        """Add the ``checkpoint`` column of version 2 (once, whoever takes the lock first)."""
        with self._write() as conn:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version == 1:
                conn.execute("ALTER TABLE results ADD COLUMN checkpoint TEXT")
                conn.execute("PRAGMA user_version = 2")
                version = 2
        return version

    def __enter__(self) -> Leaderboard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def record(self, *entries: Entry) -> None:
        """Add (or update) ``entries`` in one transaction (retried while the database is busy).

        Raises:
            LeaderboardError: when the write fails; nothing of it is recorded then.
        """
        now = datetime.now(UTC).isoformat(timespec="seconds")
        rows = [
            (
                e.key,
                e.label,
                now,
                e.report_path,
                e.dataset,
                e.n,
                e.preset,
                e.seed,
                json.dumps(list(e.threats)),
                e.clean_accuracy,
                e.union_accuracy,
                json.dumps(e.robust_accuracy),
                json.dumps({k: _json_float(v) for k, v in e.min_distortion.items()}),
                e.model_sha256,
                e.data_sha256,
                e.checkpoint,
            )
            for e in entries
        ]

        def write() -> None:
            with self._write() as conn:
                conn.executemany(
                    """
                    INSERT INTO results VALUES
                        (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT(key) DO UPDATE SET
                        label = excluded.label, recorded_at = excluded.recorded_at,
                        report_path = excluded.report_path,
                        checkpoint = COALESCE(excluded.checkpoint, checkpoint),
                        clean_accuracy = excluded.clean_accuracy,
                        union_accuracy = excluded.union_accuracy,
                        robust_accuracy = excluded.robust_accuracy,
                        min_distortion = excluded.min_distortion
                    """,
                    rows,
                )

        try:
            self._retry(write)
        except sqlite3.Error as err:
            raise LeaderboardError(
                f"Writing leaderboard {self.path} failed and nothing was recorded: {err}"
            ) from None

    def entries(self) -> list[Entry]:
        """All entries, best union robust accuracy first (then clean accuracy)."""
        try:
            rows = self._conn.execute(
                "SELECT label, clean_accuracy, union_accuracy, robust_accuracy, min_distortion, "
                "threats, dataset, n, preset, seed, report_path, model_sha256, data_sha256, "
                "recorded_at, checkpoint FROM results ORDER BY union_accuracy DESC, "
                "clean_accuracy DESC, recorded_at"
            ).fetchall()
        except sqlite3.DatabaseError as err:
            raise LeaderboardError(f"Reading leaderboard {self.path} failed: {err}") from None
        out = []
        for r in rows:
            out.append(
                Entry(
                    label=r[0],
                    clean_accuracy=r[1],
                    union_accuracy=r[2],
                    robust_accuracy=json.loads(r[3]),
                    min_distortion={k: float(v) for k, v in json.loads(r[4]).items()},
                    threats=json.loads(r[5]),
                    dataset=r[6],
                    n=r[7],
                    preset=r[8],
                    seed=r[9],
                    report_path=r[10],
                    model_sha256=r[11],
                    data_sha256=r[12],
                    recorded_at=r[13],
                    checkpoint=r[14],
                )
            )
        return out


def _tail(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters from the left ("…" + its end): a path's end names it."""
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def format_table(entries: list[Entry]) -> str:
    """The entries as a plain-text table: the model (checkpoint and the first 10 hex digits of
    its weights' SHA-256), the run folder it was recorded from, then the numbers."""
    if not entries:
        return (
            "(the leaderboard is empty: record evaluations with `multirobust compare` or "
            "`multirobust evaluate --db PATH`)"
        )
    norms = sorted({k for e in entries for k in e.min_distortion})
    head = f"{'#':>3} {'model (checkpoint)':<32} {'sha256':<10} {'folder':<16} "
    head += f"{'dataset':<10} {'clean':>7} {'union':>7} "
    head += "".join(f"{'med ' + k:>9} " for k in norms)
    head += f"{'n':>6} {'preset':<9} threats"
    lines = [head]
    for i, e in enumerate(entries, 1):
        row = f"{i:>3} {_tail(e.model, 32):<32} {(e.model_sha256 or '-')[:10]:<10} "
        row += f"{_tail(e.label, 16):<16} {(e.dataset or '-')[:10]:<10} "
        row += f"{e.clean_accuracy:>7.2%} {e.union_accuracy:>7.2%} "
        row += "".join(
            f"{e.min_distortion[k]:>9.4g} " if k in e.min_distortion else f"{'-':>9} "
            for k in norms
        )
        row += f"{e.n:>6} {(e.preset or '-'):<9} {', '.join(e.threats)}"
        lines.append(row)
    return "\n".join(lines)
