"""Ingestion health: what ``/healthz`` and ``/metrics`` report, and the operator alarm when a worker stalls.

A worker is stalled when a message it received has waited longer than ``CE_INGEST_STALL_S`` to be committed
(the database is away, or far too slow). The node then answers ``/healthz`` with 503, and the alarm
``ingest_stalled`` (key ``ingest.stalled.<worker>``) is raised on the node's own id (``cloud-<host>``): pushed
to the consoles at once, stored as soon as the database answers, cleared when the worker has caught up.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine

from cloud.alarms.lifecycle import clear_alarm, raise_alarm
from cloud.ingest.store import now_ms
from cloud.ingest.worker import IngestWorker, WorkerHealth
from cloud.metrics import Metrics
from protocol.envelope import new_id

log = logging.getLogger("civicedge.cloud.ingest")


def node_id() -> str:
    """The id this cloud node's own alarms carry (alarms are keyed by device id)."""
    return f"cloud-{os.uname().nodename}"[:64]


def node_health(engine: Engine, workers: Sequence[IngestWorker], metrics: Metrics) -> tuple[int, dict[str, Any]]:
    """What ``/healthz`` answers, on a node with the API and on a standalone worker alike: 200 when the database
    answers and no worker is stalled, else 503 with what is wrong."""
    from sqlalchemy import text

    checks: dict[str, Any] = {}
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # the reason goes to the log; the answer says only that (it may be public)
        log.warning("health check: database not answering", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
        checks["database"] = "error: not answering"
    checks["ingest_workers_connected"] = sum(w.connected.is_set() for w in workers)
    checks["ingest_workers"] = len(workers)
    ingest = ingest_report(workers, metrics)
    checks["ingest"] = ingest
    ok = checks["database"] == "ok" and not ingest["stalled"]
    return (200 if ok else 503), {"status": "ok" if ok else "degraded", **checks}


def ingest_report(workers: Sequence[IngestWorker], metrics: Metrics) -> dict[str, Any]:
    """Every worker's health and the dead letters by reason (counted by this process)."""
    healths = [w.health() for w in workers]
    dead = {
        dict(labels).get("reason", ""): int(v)
        for (name, labels), v in metrics.counters.copy().items()
        if name == "ce_dead_letters_total"
    }
    return {
        "stalled": any(h.stalled for h in healths),
        "queue_depth": sum(h.queue_depth for h in healths),
        "oldest_pending_s": max((h.oldest_pending_s for h in healths), default=0.0),
        "workers": [h.as_dict() for h in healths],
        "dead_letters": dict(sorted(dead.items())),
    }


class IngestWatch:
    """Once a second: ingestion gauges for ``/metrics``; raise or clear the stall alarm of each worker."""

    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        workers: Callable[[], Sequence[IngestWorker]],
        publish_live: Callable[[list[dict[str, Any]]], None],
        every_s: float = 1.0,
    ) -> None:
        self.engine, self.metrics, self.workers, self.publish_live = engine, metrics, workers, publish_live
        self.every_s = every_s
        self.node = node_id()
        self._raised: set[str] = set()  # workers whose stall alarm is stored
        self._announced: set[str] = set()  # workers whose stall the consoles were told of
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # the watch thread and /metrics both check

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ingest-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.check()
            except Exception:
                log.exception("ingestion health check failed")

    def check(self) -> list[WorkerHealth]:
        """Gauges, and the stall alarm raised or cleared (the watch thread; also callable from a test)."""
        with self._lock:
            healths = self.gauges()
            for h in healths:
                if h.stalled and h.worker not in self._raised:
                    self._alarm(h, raised=True)
                elif not h.stalled and (h.worker in self._raised or h.worker in self._announced):
                    self._alarm(h, raised=False)
            return healths

    def gauges(self) -> list[WorkerHealth]:
        """Set the ingestion gauges of ``/metrics``; return each worker's health."""
        healths = [w.health() for w in self.workers()]
        m = self.metrics
        m.set("ce_ingest_queue_depth", sum(h.queue_depth for h in healths), "messages received, not yet stored")
        m.set(
            "ce_ingest_oldest_pending_seconds",
            max((h.oldest_pending_s for h in healths), default=0.0),
            "age of the oldest message received and not yet committed",
        )
        m.set("ce_ingest_stalled", sum(h.stalled for h in healths), "ingestion workers behind CE_INGEST_STALL_S")
        for h in healths:
            if h.last_commit_ms is not None:
                m.set("ce_ingest_last_commit_ms", h.last_commit_ms, "when a batch last committed", worker=h.worker)
        return healths

    def _alarm(self, h: WorkerHealth, raised: bool) -> None:
        """Raise (``raised``) or clear the worker's stall alarm. A stall the database kept us from recording
        while it lasted is recorded when it ends: raised and cleared at once, so the operators see it happened."""
        key, at = f"ingest.stalled.{h.worker}"[:128], now_ms()
        why = "the database is not answering" if h.retrying else "the database is too slow"
        message = f"ingestion on {h.worker} is {h.oldest_pending_s:.0f} s behind: {why}"
        live: dict[str, Any] = {"kind": "alarm", "device_id": self.node, "site_id": None, "at_ms": at}
        event = {**live, "event": "raised", "code": "ingest_stalled", "severity": "critical", "message": message}
        late = not raised and h.worker in self._announced and h.worker not in self._raised
        ids: list[int] = []
        if raised and h.worker not in self._announced:  # the consoles hear of it now, whatever the database does
            self.publish_live([{**event, "id": None}])
            self._announced.add(h.worker)
        try:
            with self.engine.begin() as conn:
                if raised or late:
                    details = {"worker": h.worker, "queue_depth": h.queue_depth, "oldest_pending_s": h.oldest_pending_s}
                    if late:
                        message, details = f"ingestion on {h.worker} stalled and caught up", {"worker": h.worker}
                    ids = [
                        raise_alarm(
                            conn,
                            device=self.node,
                            key=key,
                            code="ingest_stalled",
                            severity="critical",
                            message=message,
                            details=details,
                            at=at,
                            msg_id=new_id(),
                            by="system",
                        )
                    ]
                if not raised:
                    ids = clear_alarm(conn, device=self.node, key=key, at=at, by="system", note="caught up")
        except Exception as exc:
            log.warning("ingestion stall alarm not stored yet", extra={"error": f"{type(exc).__name__}: {exc}"})
            return  # tried again on the next check
        if raised:
            self._raised.add(h.worker)
        else:
            self._raised.discard(h.worker)
            self._announced.discard(h.worker)
            self.publish_live([{**live, "event": "cleared", "id": i} for i in ids])


class HealthServer:
    """``/healthz`` (JSON, 503 when stalled or the database is away) and ``/metrics`` for a standalone worker
    (``civicedge cloud ingest``), which has no API of its own."""

    def __init__(self, host: str, port: int, check: Callable[[], tuple[int, dict[str, Any]]], metrics: Metrics):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import orjson

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/healthz":
                    status, body = check()
                    data, kind = orjson.dumps(body), "application/json"
                elif self.path.split("?")[0] == "/metrics":
                    status, data, kind = 200, metrics.render().encode(), "text/plain; version=0.0.4"
                else:
                    status, data, kind = 404, b'{"error": "not found"}', "application/json"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_a: object) -> None:  # quiet: the worker's own log says what matters
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="ingest-health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
