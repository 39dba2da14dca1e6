"""One leader among the cloud's processes, for the work that must happen once: the rules' timers (absence,
durations), retention, update rollouts.

On PostgreSQL the leader is whoever holds a session-level advisory lock on its own connection. Every node
tries to take it once a second; the holder checks its connection as often. When the leader's process dies
(even by SIGKILL) the server closes its session and the lock is free: another node holds it within about a
second. A leader whose machine vanishes without closing the connection is noticed by TCP keepalives set on
that session (about 15 s). A node that loses its connection stops leading at once, before anyone else can
take over. On SQLite there is one process, and it leads.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

import psycopg

from cloud.live_bridge import psycopg_url
from cloud.metrics import Metrics

log = logging.getLogger("civicedge.cloud.leader")
#: the advisory lock's key (two int4s: the project's namespace, the leader role)
LOCK_KEY = (0x0CE1, 1)
CHECK_EVERY_S = 1.0
#: a leader whose last successful check is older than this stops leading (its connection may be dead without
#: it knowing yet; the server frees the lock when it notices)
LEASE_S = 3.0


class Leadership:
    """``is_leader()`` says whether this process leads now; a timer asks before each pass."""

    def __init__(
        self, database_url: str | None, metrics: Metrics, every_s: float = CHECK_EVERY_S, compete: bool = True
    ) -> None:
        """``compete``: whether this process may lead at all (a standalone ingestion worker, which has no
        command publisher and no rollouts, never does)."""
        self.url = psycopg_url(database_url) if database_url else None
        self.compete = compete
        self.metrics = metrics
        self.every_s = every_s
        self._leading = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self.since: float | None = None
        self._checked = 0.0  # monotonic time of the last successful check while leading
        if self.url is None and compete:  # one process: it leads
            self._leading.set()
            self.since = time.time()
        self._gauge()
        self.metrics.inc("ce_leader_elected_total", 0, "times this node became the leader")

    @property
    def shared(self) -> bool:
        """Whether several processes may compete (PostgreSQL)."""
        return self.url is not None

    def is_leader(self) -> bool:
        if not self._leading.is_set():
            return False
        return self.url is None or time.monotonic() - self._checked < LEASE_S

    def start(self) -> None:
        if self.url is None or not self.compete or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="leader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self._drop()

    def report(self) -> dict[str, Any]:
        return {"leader": self.is_leader(), "since": self.since if self.is_leader() else None}

    def _gauge(self) -> None:
        self.metrics.set("ce_leader", int(self.is_leader()), "1 on the node that runs the timers, retention, rollouts")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except psycopg.Error as exc:
                if self._leading.is_set():
                    log.warning("leadership lost: the database connection failed", extra={"error": str(exc)})
                self._drop()
            self._stop.wait(self.every_s)

    def _step(self) -> None:
        if self._conn is None or self._conn.closed:
            # keepalives and a send timeout on both ends: a dead peer is noticed within seconds, not hours
            self._conn = psycopg.connect(
                self.url or "",
                autocommit=True,
                connect_timeout=5,
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=3,
                tcp_user_timeout=5000,
            )
            for name, value in (
                ("tcp_keepalives_idle", "5"),
                ("tcp_keepalives_interval", "2"),
                ("tcp_keepalives_count", "3"),
                ("statement_timeout", "'2s'"),
            ):
                self._conn.execute(f"SET {name} = {value}")
        if self._leading.is_set():
            self._conn.execute("SELECT 1")  # still connected: still holding the lock
            self._checked = time.monotonic()
            return
        got = self._conn.execute("SELECT pg_try_advisory_lock(%s, %s)", LOCK_KEY).fetchone()
        if got and got[0]:
            self.since = time.time()
            self._checked = time.monotonic()
            self._leading.set()
            self._gauge()
            self.metrics.inc("ce_leader_elected_total", 1, "times this node became the leader")
            log.info("this node leads: timers, retention and rollouts run here")

    def _drop(self) -> None:
        was = self._leading.is_set()
        self._leading.clear()
        self._gauge()
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()  # the session ends: the lock is free for another node
            self._conn = None
        if was:
            self.since = None
