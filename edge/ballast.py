"""Room held back on a gateway's card: a ballast file beside a database, given up when the filesystem is full so
the writes that matter (alarms) still fit, and taken back when space returns. Also: telling a full disk from
other write errors."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sqlite3
from pathlib import Path

SQLITE_FULL = 13


def disk_full(exc: BaseException) -> bool:
    """An error that means the filesystem has no room (SQLite's SQLITE_FULL or ENOSPC from a plain write)."""
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL or "full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class Ballast:
    """``size`` bytes at ``path`` (0: none kept)."""

    def __init__(self, path: Path, size: int) -> None:
        self.path, self.size = path, size

    def exists(self) -> bool:
        return self.path.exists()

    def take(self) -> bool:
        """(Re)make the file if there is room for it and as much again; False if there is not."""
        if not self.size:
            return True
        try:
            if self.path.exists() and self.path.stat().st_size >= self.size:
                return True
            if shutil.disk_usage(self.path.parent).free < 2 * self.size:
                return False
            with open(self.path, "wb") as f:  # real blocks, not a sparse file; allocated, not written
                try:
                    os.posix_fallocate(f.fileno(), 0, self.size)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    chunk = b"\0" * 65536  # a filesystem without fallocate: write it
                    for _ in range(0, self.size, len(chunk)):
                        f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            return True
        except OSError:
            self.give_up()
            return False

    def give_up(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
