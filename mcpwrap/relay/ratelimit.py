"""Token buckets shared by every mcpwrap process of this user.

A desktop app starts one wrapper per server and several apps may run at once, so a
per-process counter would multiply every limit. The buckets live in SQLite under the
state dir; each take is one short IMMEDIATE transaction. The arithmetic is a pure
function so it is tested without a database.

The bucket's time is read inside that transaction: a reading taken before the lock is
stale once another process has stored a later one, and storing it would move the bucket's
time back, so the next take would refill the same seconds again (eight wrappers on one
100/s bucket admitted 1,148 calls in 2 s that way). A caller that still passes its own
reading gets it clamped: it never moves the bucket's time back.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from mcpwrap.basics.errors import MCPWrapError
from mcpwrap.basics.sqlitedb import open_wal

_SCHEMA = "CREATE TABLE IF NOT EXISTS buckets (key TEXT PRIMARY KEY, tokens REAL, updated REAL);"

if TYPE_CHECKING:
    import sqlite3

    from mcpwrap.basics.units import Rate


class RateStateError(MCPWrapError):
    """The shared rate state could not be read or written."""


def take(tokens: float, updated: float, now: float, rate: Rate) -> tuple[float, float]:
    """Refill a bucket of capacity rate.count to `now` and take one token.

    Returns (tokens left, seconds to wait). A wait above 0 means nothing was taken.
    A clock that went backwards refills nothing rather than minting tokens.
    """
    per_token = rate.per_seconds / rate.count
    elapsed = max(0.0, now - updated)
    tokens = min(float(rate.count), tokens + elapsed / per_token)
    # A caller that waited exactly the time it was told must not miss by a rounding error.
    if tokens >= 1.0 - 1e-9:
        return max(0.0, tokens - 1.0), 0.0
    return tokens, (1.0 - tokens) * per_token


class RateLimiter:
    """Bucket store in SQLite; the connection opens on the first call that has a rate.

    `clock` is wall time (time.time): buckets outlive processes and are shared by them, so
    a per-process monotonic clock would not do.
    """

    def __init__(self, path: str, clock: Callable[[], float] = time.time) -> None:
        self._path = path
        self._clock = clock
        self._db: sqlite3.Connection | None = None

    def take(self, key: str, rate: Rate, now: float | None = None) -> float:
        """Seconds to wait before `key` may run again; 0.0 means a token was taken.

        Leave `now` out: the clock is then read inside the transaction, after every other
        process's take has committed. A `now` given is a reading from before the lock: it
        refills up to that time but never moves the bucket's time back (a real clock step
        back then refills nothing until the clock has caught up).
        """
        import sqlite3

        try:
            return self._take(self._connect(), key, rate, now)
        except (sqlite3.Error, OSError) as exc:
            raise RateStateError(
                f"rate state {self._path}: {exc}; check that the state directory is "
                "writable, or remove the file to reset every rate limit"
            ) from exc

    def _take(self, db: sqlite3.Connection, key: str, rate: Rate, given: float | None) -> float:
        db.execute("BEGIN IMMEDIATE")  # from here on no other process changes the bucket
        try:
            now = self._clock() if given is None else given
            row = db.execute("SELECT tokens, updated FROM buckets WHERE key = ?", (key,)).fetchone()
            tokens, updated = (float(rate.count), now) if row is None else row
            left, wait = take(tokens, updated, now, rate)
            # Read inside the lock, the clock is the bucket's new time even when it stepped
            # back; a reading from before the lock may be stale, so it only moves it on.
            stored = now if given is None else max(now, updated)
            db.execute(
                "INSERT INTO buckets (key, tokens, updated) VALUES (?, ?, ?) ON CONFLICT(key) "
                "DO UPDATE SET tokens = excluded.tokens, updated = excluded.updated",
                (key, left, stored),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return wait

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            os.makedirs(os.path.dirname(self._path) or ".", mode=0o700, exist_ok=True)
            self._db = open_wal(self._path, _SCHEMA)
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
