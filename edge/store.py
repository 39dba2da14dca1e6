"""The edge SQLite database: WAL, durability setting, and named migrations recorded in ``_migrations``."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import sqlite_utils


def _m001_outbox(db: sqlite_utils.Database) -> None:
    # AUTOINCREMENT: row ids are never reused, so a drain cursor ("after row N") stays valid even when the
    # table empties and refills.
    db.execute(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, lane INTEGER NOT NULL, channel TEXT NOT NULL,"
        " type TEXT NOT NULL, seq INTEGER NOT NULL, payload BLOB NOT NULL, size INTEGER NOT NULL)"
    )
    db["outbox"].create_index(["lane", "id"])  # type: ignore[union-attr]
    db.execute(
        "CREATE TABLE readings (id INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB NOT NULL, size INTEGER NOT NULL)"
    )
    db["lane_seq"].create({"lane": int, "next_seq": int}, pk="lane")  # type: ignore[union-attr]
    db["counters"].create({"name": str, "value": int}, pk="name")  # type: ignore[union-attr]


def _m002_commands(db: sqlite_utils.Database) -> None:
    db["executed_commands"].create(  # type: ignore[union-attr]
        {"cid": str, "name": str, "deadline_ms": int, "executed_ms": int}, pk="cid"
    )
    db["executed_commands"].create_index(["deadline_ms"])  # type: ignore[union-attr]


def _m003_kv(db: sqlite_utils.Database) -> None:
    db["kv"].create({"key": str, "value": str}, pk="key")  # type: ignore[union-attr]


MIGRATIONS: list[tuple[str, Callable[[sqlite_utils.Database], None]]] = [
    ("001_outbox", _m001_outbox),
    ("002_commands", _m002_commands),
    ("003_kv", _m003_kv),
]


def open_sqlite(path: Path) -> sqlite3.Connection:
    """An edge SQLite file (created with its folder if needed): autocommit (explicit BEGIN where a change spans
    statements), WAL, a busy timeout, usable from worker threads (callers serialise use with a lock). Deleted
    content is overwritten (``secure_delete``): an erased face or a sent enrolment does not linger in free pages
    of a gateway's card."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA secure_delete=ON")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def connect(path: Path, durability: str = "power_loss") -> sqlite3.Connection:
    """Open (creating if needed) the agent database and bring its schema up to date."""
    conn = open_sqlite(path)
    conn.execute(f"PRAGMA synchronous={'FULL' if durability == 'power_loss' else 'NORMAL'}")
    conn.execute("PRAGMA wal_autocheckpoint=4000")
    migrate(conn)
    return conn


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply the migrations not yet recorded; return the names applied."""
    conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_ms INTEGER NOT NULL)")
    done = {r[0] for r in conn.execute("SELECT name FROM _migrations")}
    db = sqlite_utils.Database(conn)
    applied = []
    for name, step in MIGRATIONS:
        if name in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            step(db)
            conn.execute("INSERT INTO _migrations VALUES (?, ?)", (name, time.time_ns() // 1_000_000))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied
