"""The state dir's SQLite stores (rate buckets, the token registry), opened one way.

WAL with synchronous=NORMAL: a commit costs no fsync and readers never wait for the
writer, so a wrapper's per-call reads stay short while another mcpwrap process writes.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import sqlite3


def open_wal(path: str, schema: str, patience: float = 5.0) -> sqlite3.Connection:
    """Open `path`, switch it to WAL and create `schema`, waiting out other processes
    doing the same: switching a new database to WAL needs a lock that SQLite reports as
    busy at once, without its busy timeout (two desktop apps starting wrappers together)."""
    import sqlite3

    deadline = time.monotonic() + patience
    while True:
        try:
            return _open(path, schema)
        except sqlite3.OperationalError as exc:
            busy = "locked" in str(exc) or "busy" in str(exc)
            if not busy or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _open(path: str, schema: str) -> sqlite3.Connection:
    import sqlite3

    db = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(schema)
    except BaseException:
        db.close()
        raise
    return db
