"""Visitor passes: a resident pre-authorises a one-time (or n-time) code for a time window. Checked at the
gate with no cloud at all. Codes are kept only as salted hashes; a used-up or expired code is refused."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

from edge.store import open_sqlite


def _now_ms() -> int:
    return int(time.time() * 1000)


class PassBook:
    def __init__(self, path: Path) -> None:
        self._db = open_sqlite(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS passes (digest TEXT PRIMARY KEY, salt BLOB NOT NULL, issued_by TEXT, "
            "valid_from_ms INTEGER NOT NULL, valid_until_ms INTEGER NOT NULL, uses_left INTEGER NOT NULL)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB)")
        row = self._db.execute("SELECT value FROM meta WHERE key = 'salt'").fetchone()
        if row is None:
            salt = os.urandom(16)
            self._db.execute("INSERT INTO meta VALUES ('salt', ?)", (salt,))
        else:
            salt = row[0]
        self._salt: bytes = salt
        self._lock = threading.Lock()

    def _digest(self, code: str) -> str:
        return hashlib.pbkdf2_hmac("sha256", code.encode(), self._salt, 20_000).hex()

    def add(self, code: str, issued_by: str, valid_from_ms: int, valid_until_ms: int, uses: int = 1) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO passes VALUES (?, ?, ?, ?, ?, ?)",
                (self._digest(code), self._salt, issued_by, valid_from_ms, valid_until_ms, max(1, uses)),
            )

    def use(self, code: str, at_ms: int | None = None) -> str | None:
        """The issuer if the code is valid now (and one use is spent), else None."""
        at = _now_ms() if at_ms is None else at_ms
        digest = self._digest(code)
        with self._lock:
            row = self._db.execute(
                "SELECT issued_by, valid_from_ms, valid_until_ms, uses_left FROM passes WHERE digest = ?", (digest,)
            ).fetchone()
            if row is None or not row[1] <= at <= row[2] or row[3] < 1:
                return None
            self._db.execute("UPDATE passes SET uses_left = uses_left - 1 WHERE digest = ?", (digest,))
            self._db.execute("DELETE FROM passes WHERE valid_until_ms < ?", (at - 86_400_000,))
            return str(row[0])

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM passes WHERE uses_left > 0").fetchone()[0])

    def close(self) -> None:
        self._db.close()
