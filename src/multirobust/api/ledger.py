"""The query ledger: every query a server answers, per API key, in SQLite.

One row per request: the key's id (a hash prefix, never the key), the time, the number of images
(a batch of k images is k queries), the status, the output mode and the outputs exactly as sent.
Budgets and rate limits are enforced here, *before* the model runs:

1. :meth:`Ledger.reserve` opens one ``BEGIN IMMEDIATE`` transaction (SQLite's write lock, so
   concurrent requests, threads or server processes on the same file are serialised), reads the
   key's spent total and its queries in the rate window, and either refuses the request
   (:class:`BudgetExhausted`, :class:`RateLimited`) or inserts a ``reserved`` row, all in the
   same transaction: two requests can never both spend the last of a budget.
2. The server runs the model, then :meth:`Ledger.answer` marks the row ``answered`` with the
   outputs; if anything fails first, :meth:`Ledger.fail` marks it ``failed`` and gives the
   queries back. Nothing is counted that was not answered.

A request may carry an id (OIP's ``"id"``). Sent again with the same images after it was
answered (a client retrying after a lost response), it is answered from the ledger, the same
outputs, at no charge: the client learns nothing new. The same id with other images is refused
(:class:`RequestConflict`), as is a second copy while the first is still being answered.

Spent totals live in a ``totals`` table updated in the same transactions as the rows, so a
budget check reads one row however long the history. At start, :meth:`Ledger.recover` marks the
rows a crashed server left ``reserved`` as ``interrupted`` (not answered, not counted) and
recomputes the totals from the rows. One server process per ledger file.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ANONYMOUS = "anonymous"
"""Key id recorded when the server takes no keys."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS queries (
    id INTEGER PRIMARY KEY,
    key_id TEXT NOT NULL,
    request_id TEXT,
    time REAL NOT NULL,
    images INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('reserved', 'answered', 'failed', 'interrupted')),
    answered_at REAL,
    output TEXT,
    digest TEXT,
    returned TEXT,
    reason TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS queries_request ON queries (key_id, request_id)
    WHERE request_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS queries_window ON queries (key_id, time);
CREATE TABLE IF NOT EXISTS totals (key_id TEXT PRIMARY KEY, spent INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_COUNTED = "('reserved', 'answered')"


def key_id(key: str) -> str:
    """The id a key is recorded under: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class LedgerError(Exception):
    """A request the ledger refuses; ``status`` is the HTTP status the server answers with."""

    status = 429

    def details(self) -> dict[str, Any]:
        return {}


class BudgetExhausted(LedgerError):
    """The key's query budget cannot pay for the request."""

    def __init__(self, budget: int, remaining: int, images: int) -> None:
        self.budget, self.remaining, self.images = budget, remaining, images
        super().__init__(
            f"Query budget exhausted: this request needs {images} queries and the key has "
            f"{remaining} of its {budget} left"
        )

    def details(self) -> dict[str, Any]:
        return {"budget": self.budget, "budget_remaining": self.remaining}


class RateLimited(LedgerError):
    """The key has used its rate limit for the current window."""

    def __init__(
        self,
        limit: int,
        window: float,
        retry_after: float,
        remaining: int | None,
        budget: int | None,
    ) -> None:
        self.limit, self.window, self.retry_after = limit, window, retry_after
        self.remaining, self.budget = remaining, budget
        super().__init__(
            f"Rate limit reached: at most {limit} queries per {window:g} s for this key; "
            f"retry after {retry_after:.1f} s"
        )

    def details(self) -> dict[str, Any]:
        return {
            "retry_after": round(self.retry_after, 3),
            "budget": self.budget,
            "budget_remaining": self.remaining,
        }


class RequestConflict(LedgerError):
    """A request id reused with other images, or sent again while still being answered."""

    status = 409


@dataclass(frozen=True)
class Reservation:
    """Queries held for a request until it is answered or fails."""

    row: int
    key_id: str
    images: int


@dataclass(frozen=True)
class Replay:
    """A retried request already answered: its outputs as sent the first time (JSON text)."""

    returned: str


class Ledger:
    """SQLite ledger of the queries a server answers (see the module docstring).

    Args:
        path: the database file (created with its folder if missing).
        timeout: seconds a transaction waits for the write lock before failing.
    """

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.timeout = timeout
        self._local = threading.local()
        con = self._con()
        con.executescript(_SCHEMA)

    def _con(self) -> sqlite3.Connection:
        """This thread's connection (sqlite3 connections are not shared between threads)."""
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
            con.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit survives a crash of the process; only a power loss can
            # drop the last commits, never corrupt the file.
            con.execute("PRAGMA synchronous=NORMAL")
            self._local.con = con
        return con

    def close(self) -> None:
        """Close this thread's connection."""
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    # ------------------------------------------------------------------ setup
    def recover(self) -> int:
        """Mark rows left ``reserved`` by a crashed server as interrupted; rebuild the totals.

        Returns:
            The number of rows marked.
        """
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            marked = con.execute(
                "UPDATE queries SET status = 'interrupted', reason = 'server stopped' "
                "WHERE status = 'reserved'"
            ).rowcount
            con.execute("DELETE FROM totals")
            con.execute(
                "INSERT INTO totals (key_id, spent) SELECT key_id, SUM(images) FROM queries "
                f"WHERE status IN {_COUNTED} GROUP BY key_id"
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return int(marked)

    def set_meta(self, **values: Any) -> None:
        """Record settings (JSON values) beside the queries, e.g. the model served."""
        con = self._con()
        with con:
            for name, value in values.items():
                con.execute(
                    "INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)",
                    (name, json.dumps(value)),
                )

    def meta(self) -> dict[str, Any]:
        rows = self._con().execute("SELECT name, value FROM meta").fetchall()
        return {name: json.loads(value) for name, value in rows}

    # ------------------------------------------------------------------ the request cycle
    def reserve(
        self,
        key: str,
        images: int,
        *,
        budget: int | None = None,
        rate_limit: int | None = None,
        rate_window: float = 60.0,
        request_id: str | None = None,
        digest: str | None = None,
    ) -> Reservation | Replay:
        """Hold ``images`` queries for key id ``key``, or refuse, atomically.

        Returns:
            A :class:`Reservation` to :meth:`answer` or :meth:`fail`, or a :class:`Replay`
            when ``request_id`` was already answered for these images.

        Raises:
            BudgetExhausted, RateLimited, RequestConflict.
        """
        if images < 1:
            raise ValueError(f"Invalid images: {images} (must be >= 1)")
        con = self._con()
        now = time.time()
        con.execute("BEGIN IMMEDIATE")
        try:
            if request_id is not None:
                row = con.execute(
                    "SELECT id, status, digest, returned FROM queries "
                    "WHERE key_id = ? AND request_id = ?",
                    (key, request_id),
                ).fetchone()
                if row is not None:
                    rid, status, old_digest, returned = row
                    if status in ("answered", "reserved") and old_digest != digest:
                        raise RequestConflict(
                            f"Request id {request_id!r} was already used with other images; "
                            "a retry must send the same images (use a new id for new images)"
                        )
                    if status == "answered":
                        con.execute("COMMIT")
                        return Replay(returned)
                    if status == "reserved":
                        raise RequestConflict(
                            f"Request id {request_id!r} is still being answered; retry later"
                        )
                    # It failed before: the id is free again, the old row stays as history.
                    con.execute("UPDATE queries SET request_id = NULL WHERE id = ?", (rid,))
            spent_row = con.execute("SELECT spent FROM totals WHERE key_id = ?", (key,)).fetchone()
            spent = int(spent_row[0]) if spent_row else 0
            remaining = None if budget is None else max(budget - spent, 0)
            if budget is not None and spent + images > budget:
                raise BudgetExhausted(budget, max(budget - spent, 0), images)
            if rate_limit is not None:
                recent = con.execute(
                    "SELECT time, images FROM queries WHERE key_id = ? AND time > ? "
                    f"AND status IN {_COUNTED} ORDER BY time",
                    (key, now - rate_window),
                ).fetchall()
                used = sum(n for _, n in recent)
                if used + images > rate_limit:
                    # Wait until enough of the window's queries have aged out.
                    need, freed, retry = used + images - rate_limit, 0, rate_window
                    for t, n in recent:
                        freed += n
                        if freed >= need:
                            retry = t + rate_window - now
                            break
                    raise RateLimited(rate_limit, rate_window, max(retry, 0.0), remaining, budget)
            cur = con.execute(
                "INSERT INTO queries (key_id, request_id, time, images, status, digest) "
                "VALUES (?, ?, ?, ?, 'reserved', ?)",
                (key, request_id, now, images, digest),
            )
            con.execute(
                "INSERT INTO totals (key_id, spent) VALUES (?, ?) "
                "ON CONFLICT (key_id) DO UPDATE SET spent = spent + excluded.spent",
                (key, images),
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        assert cur.lastrowid is not None
        return Reservation(cur.lastrowid, key, images)

    def answer(self, reservation: Reservation, *, output: str, returned: str) -> None:
        """Record that the reserved queries were answered, with the outputs as sent."""
        con = self._con()
        with con:
            con.execute(
                "UPDATE queries SET status = 'answered', answered_at = ?, output = ?, "
                "returned = ? WHERE id = ? AND status = 'reserved'",
                (time.time(), output, returned, reservation.row),
            )

    def fail(self, reservation: Reservation, reason: str) -> None:
        """Give back the queries of a request that was not answered."""
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            changed = con.execute(
                "UPDATE queries SET status = 'failed', reason = ? "
                "WHERE id = ? AND status = 'reserved'",
                (reason[:500], reservation.row),
            ).rowcount
            if changed:
                con.execute(
                    "UPDATE totals SET spent = spent - ? WHERE key_id = ?",
                    (reservation.images, reservation.key_id),
                )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ reading
    def spent(self, key: str) -> int:
        """Queries reserved or answered for key id ``key`` (what its budget has paid for)."""
        row = self._con().execute("SELECT spent FROM totals WHERE key_id = ?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def answered(self, key: str | None = None) -> tuple[int, int]:
        """(queries, requests) answered, for one key id or all."""
        sql = "SELECT COALESCE(SUM(images), 0), COUNT(*) FROM queries WHERE status = 'answered'"
        args: tuple[Any, ...] = ()
        if key is not None:
            sql += " AND key_id = ?"
            args = (key,)
        q, r = self._con().execute(sql, args).fetchone()
        return int(q), int(r)

    def summary(self) -> dict[str, Any]:
        """Per key id: answered queries and requests, failed requests (JSON-ready)."""
        rows = (
            self._con()
            .execute(
                "SELECT key_id, status, COUNT(*), COALESCE(SUM(images), 0) FROM queries "
                "GROUP BY key_id, status"
            )
            .fetchall()
        )
        out: dict[str, Any] = {}
        for key, status, count, images in rows:
            entry = out.setdefault(key, {"queries": 0, "requests": 0, "failed_requests": 0})
            if status == "answered":
                entry["queries"] += int(images)
                entry["requests"] += int(count)
            elif status in ("failed", "interrupted"):
                entry["failed_requests"] += int(count)
        return out

    def rows(self, key: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The latest ledger rows (newest first), for inspection and tests."""
        sql = (
            "SELECT id, key_id, request_id, time, images, status, output, returned, reason "
            "FROM queries"
        )
        args: tuple[Any, ...] = ()
        if key is not None:
            sql += " WHERE key_id = ?"
            args = (key,)
        sql += " ORDER BY id DESC LIMIT ?"
        cols = ("id", "key_id", "request_id", "time", "images", "status", "output", "returned")
        out = []
        for r in self._con().execute(sql, (*args, limit)).fetchall():
            entry = dict(zip((*cols, "reason"), r, strict=True))
            out.append(entry)
        return out


def read_keys(path: str | os.PathLike[str]) -> dict[str, str]:
    """API keys from a file, one per line (blank lines and ``#`` comments skipped).

    Returns:
        SHA-256 hex digest of each key -> its key id. Only digests are kept in memory, so a
        lookup's time does not depend on how much of a guessed key matches.

    Raises:
        ValueError: an empty file, a key with whitespace inside, or a duplicate.
    """
    text = Path(path).read_text(encoding="utf-8")
    keys: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        key = line.strip()
        if not key or key.startswith("#"):
            continue
        if any(ch.isspace() for ch in key) or not key.isprintable():
            raise ValueError(f"{path}:{number}: a key must be printable without spaces")
        digest = hashlib.sha256(key.encode()).hexdigest()
        if digest in keys:
            raise ValueError(f"{path}:{number}: duplicate key")
        keys[digest] = digest[:16]
    if not keys:
        raise ValueError(f"{path} holds no keys (one key per line)")
    return keys


def retry_seconds(value: float) -> str:
    """The ``Retry-After`` header value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(value)))
