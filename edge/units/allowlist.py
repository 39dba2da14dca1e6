"""The barrier's vehicle allow-list: plates in normal form with holder, kind and validity window, kept in SQLite
and updated by cloud deltas in one transaction per delta (revision recorded)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from edge.store import open_sqlite
from protocol.messages import AllowlistDelta


@dataclass(frozen=True, slots=True)
class Entry:
    plate: str
    holder: str
    kind: str
    valid_from_ts: int | None
    valid_until_ts: int | None

    def valid_at(self, ts: int) -> bool:
        return (self.valid_from_ts is None or self.valid_from_ts <= ts) and (
            self.valid_until_ts is None or ts <= self.valid_until_ts
        )


class Allowlist:
    def __init__(self, path: Path) -> None:
        self._db = open_sqlite(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS plates (plate TEXT PRIMARY KEY, holder TEXT NOT NULL, kind TEXT NOT NULL, "
            "valid_from_ts INTEGER, valid_until_ts INTEGER)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        self._lock = threading.Lock()

    @property
    def revision(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
        return int(row[0]) if row else 0

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM plates").fetchone()[0])

    def lookup(self, plate: str) -> Entry | None:
        row = self._db.execute(
            "SELECT plate, holder, kind, valid_from_ts, valid_until_ts FROM plates WHERE plate = ?", (plate,)
        ).fetchone()
        return Entry(*row) if row else None

    def apply_delta(self, delta: AllowlistDelta) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if delta.base_revision is None:
                    self._db.execute("DELETE FROM plates")
                self._db.executemany("DELETE FROM plates WHERE plate = ?", [(p,) for p in delta.deletes])
                self._db.executemany(
                    "INSERT OR REPLACE INTO plates VALUES (?, ?, ?, ?, ?)",
                    [(e.plate, e.holder, e.kind, e.valid_from_ts, e.valid_until_ts) for e in delta.upserts],
                )
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('revision', ?)", (str(delta.revision),))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self._db.close()
