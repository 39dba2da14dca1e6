"""The channel between cloud processes, on PostgreSQL. Every node publishes the console events it produces with
``NOTIFY ce_live`` and listens on the same channel, so a console connected to any node sees every alarm,
whichever worker stored it. Device changes (revoked, reinstated, moved, re-keyed) go out on ``ce_devices``: every
node's ingestion drops its cached view of that device at once, so a device revoked through one node is refused
by the workers of every other; after the listener reconnects (it may have missed some), every node re-reads the
whole registry. Each node tags what it sends and skips its own (it has already delivered them to its
consoles). Events are labelled (department, confidentiality) by the node that raised them, before they leave it.

A notification carries at most 8000 bytes; an event that does not fit is dropped from the bridge (counted and
logged; it reached the raising node's consoles, and every page shows it on load). The listener reconnects on
its own with a growing pause; ``listening`` says whether it is connected (``/healthz`` reports it).
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from collections.abc import Callable
from typing import Any

import orjson
import psycopg
from sqlalchemy.engine import make_url

from cloud.live import LiveHub
from cloud.metrics import Metrics

log = logging.getLogger("civicedge.cloud.live")
CHANNEL = "ce_live"
DEVICES = "ce_devices"
RULES = "ce_rules"  # an operator reloaded the rule set: every node reads its rules file again
MAX_PAYLOAD = 7900
DEVICE_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def psycopg_url(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgLiveBridge:
    def __init__(
        self,
        database_url: str,
        hub: LiveHub,
        metrics: Metrics,
        on_device: Callable[[str], None] | None = None,
        on_resync: Callable[[], None] | None = None,
        on_rules: Callable[[], object] | None = None,
    ) -> None:
        self.url = psycopg_url(database_url)
        self.hub, self.metrics = hub, metrics
        self.on_device, self.on_resync, self.on_rules = on_device, on_resync, on_rules
        self.node = uuid.uuid4().hex[:16]
        self.listening = threading.Event()
        self._stop = threading.Event()
        self._send_lock = threading.Lock()
        self._send_conn: psycopg.Connection[Any] | None = None
        self._thread = threading.Thread(target=self._listen, name="live-bridge", daemon=True)

    def start(self) -> None:
        for name, text in (  # listed from the start, so a quiet bridge reads 0 rather than absent
            ("ce_live_bridge_sent_total", "live events sent to other nodes"),
            ("ce_live_bridge_received_total", "live events received from other nodes"),
            ("ce_live_bridge_rejected_total", "notifications on the live channel not understood"),
            ("ce_live_bridge_failed_total", "live events not sent"),
            ("ce_live_bridge_dropped_total", "live events too large for a notification"),
        ):
            self.metrics.inc(name, 0, text)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with self._send_lock:
            if self._send_conn is not None:
                self._send_conn.close()
                self._send_conn = None

    # --- out ---------------------------------------------------------------------------------------------

    def send(self, events: list[dict[str, Any]]) -> None:
        payloads = []
        for e in events:
            p = orjson.dumps({"o": self.node, "e": e}).decode()
            if len(p.encode()) > MAX_PAYLOAD:
                self.metrics.inc("ce_live_bridge_dropped_total", 1, "live events too large for a notification")
                log.warning("live event too large for the bridge", extra={"kind": e.get("kind"), "bytes": len(p)})
                continue
            payloads.append(p)
        self._notify(CHANNEL, payloads)

    def device_changed(self, device_id: str) -> None:
        """Tell every node's ingestion to read this device from the registry again."""
        self._notify(DEVICES, [device_id])

    def rules_changed(self) -> None:
        """Tell every other node to read its rules file again (this one has)."""
        self._notify(RULES, [self.node])

    def _notify(self, channel: str, payloads: list[str]) -> None:
        if not payloads:
            return
        with self._send_lock:
            for attempt in (1, 2):  # a connection the server closed is opened again once
                try:
                    if self._send_conn is None or self._send_conn.closed:
                        self._send_conn = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
                    with self._send_conn.cursor() as cur:
                        for p in payloads:
                            cur.execute("SELECT pg_notify(%s, %s)", (channel, p))
                    self.metrics.inc("ce_live_bridge_sent_total", len(payloads), "live events sent to other nodes")
                    return
                except psycopg.Error as exc:
                    if self._send_conn is not None:
                        self._send_conn.close()
                    self._send_conn = None
                    if attempt == 2:
                        self.metrics.inc("ce_live_bridge_failed_total", len(payloads), "live events not sent")
                        log.warning("live bridge: events not sent to other nodes", extra={"error": str(exc)})

    # --- in ----------------------------------------------------------------------------------------------

    def _listen(self) -> None:
        pause = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    conn.execute(f"LISTEN {DEVICES}")
                    conn.execute(f"LISTEN {RULES}")
                    self.listening.set()
                    if self.on_resync is not None:  # whatever changed while nobody listened: read it all again
                        self.on_resync()
                    pause = 0.5
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=0.5, stop_after=200):
                            if n.channel == DEVICES:
                                self._device(n.payload)
                            elif n.channel == RULES:
                                if n.payload != self.node and self.on_rules is not None:
                                    self.on_rules()
                            else:
                                self._deliver(n.payload)
            except psycopg.Error as exc:
                log.warning("live bridge: listener reconnecting", extra={"error": str(exc)})
            finally:
                self.listening.clear()
            if self._stop.wait(pause):
                return
            pause = min(pause * 2, 10.0)

    def _device(self, payload: str) -> None:
        if not DEVICE_ID.match(payload):
            self.metrics.inc("ce_live_bridge_rejected_total", 1, "notifications on the live channel not understood")
            return
        if self.on_device is not None:
            self.on_device(payload)

    def _deliver(self, payload: str) -> None:
        try:
            msg = orjson.loads(payload)
            if msg.get("o") == self.node:
                return  # our own: already delivered to this node's consoles
            event = msg["e"]
            if not isinstance(event, dict):
                raise TypeError("not an event")
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
            self.metrics.inc("ce_live_bridge_rejected_total", 1, "notifications on the live channel not understood")
            log.warning("live bridge: a notification not understood", extra={"error": str(exc)})
            return
        self.metrics.inc("ce_live_bridge_received_total", 1, "live events received from other nodes")
        self.hub.publish(event)
