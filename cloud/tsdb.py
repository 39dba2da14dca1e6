"""Time-series export as InfluxDB line protocol through ``influxdb-client`` (InfluxDB 2/3, or
VictoriaMetrics, which accepts the same ``/api/v2/write``). A slow or dead server never blocks ingestion:
points wait in a bounded queue, are retried with backoff, and are dropped (and counted) when it is full."""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from cloud.metrics import Metrics

log = logging.getLogger("civicedge.cloud.tsdb")


def _tag(v: str) -> str:
    return v.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def line(site: str, device: str, metric: str, value: float, ts_ms: int) -> str:
    """``telemetry,site=…,device=… <metric>=<value> <ts>`` with ms precision."""
    return f"telemetry,site={_tag(site)},device={_tag(device)} {_tag(metric)}={value!r} {ts_ms}"


class TsdbExporter:
    def __init__(
        self, url: str, token: str, org: str, bucket: str, metrics: Metrics, max_queue: int = 200_000, batch: int = 5000
    ) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS
        from influxdb_client.domain.write_precision import WritePrecision

        self.client = InfluxDBClient(url=url, token=token or "none", org=org, timeout=10_000)
        self.write_api = self.client.write_api(write_options=SYNCHRONOUS)
        self.precision: Any = WritePrecision.MS
        self.bucket = bucket
        self.metrics = metrics
        self.batch = batch
        self.q: deque[str] = deque()
        self.max_queue = max_queue
        self._cv = threading.Condition()
        self._stop = False
        self._stopped = threading.Event()
        self.written = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="tsdb-export", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stopped.set()
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout)
        self.client.close()  # type: ignore[no-untyped-call]

    def submit(self, points: list[tuple[str, str, str, float, int]]) -> None:
        if not points:
            return
        with self._cv:
            room = self.max_queue - len(self.q)
            take = points[:room] if room < len(points) else points
            self.q.extend(line(*p) for p in take)
            if len(take) < len(points):
                self.dropped += len(points) - len(take)
                self.metrics.inc("ce_tsdb_dropped_total", len(points) - len(take), "points dropped: queue full")
            self.metrics.set("ce_tsdb_queue_depth", len(self.q), "points waiting for the TSDB")
            self._cv.notify()

    def _run(self) -> None:
        failures = 0
        while True:
            with self._cv:
                while not self.q and not self._stop:
                    self._cv.wait()
                if self._stop and not self.q:
                    return
                chunk = [self.q.popleft() for _ in range(min(self.batch, len(self.q)))]
            try:
                self.write_api.write(self.bucket, record="\n".join(chunk), write_precision=self.precision)
                failures = 0
                self.written += len(chunk)
                self.metrics.inc("ce_tsdb_written_total", len(chunk), "points written to the TSDB")
            except Exception as exc:
                failures += 1
                self.metrics.inc("ce_tsdb_errors_total", 1, "failed TSDB writes")
                log.warning("tsdb write failed", extra={"error": str(exc)[:200], "retry": failures})
                with self._cv:
                    self.q.extendleft(reversed(chunk))  # retry in order
                    if self._stop:
                        return
                self._stopped.wait(min(10.0, 0.2 * 2**failures))  # backoff that a stop cuts short
