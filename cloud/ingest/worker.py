"""An ingestion worker: a shared-subscription MQTT consumer that acknowledges only durable batches.

paho runs with ``manual_ack=True``: a message's PUBACK is sent only after the batch holding it committed. A
worker killed mid-batch leaves its messages unacknowledged in its persistent session (fixed client id,
``clean_session=False``); the broker redelivers them when the worker reconnects, and the unique message id
turns any that were already stored into counted duplicates.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from cloud.ingest.store import BatchResult, Inbound, Store, now_ms
from protocol.topics import shared, subscription

log = logging.getLogger("civicedge.cloud.ingest")
_STOP = object()
FAULT_EXIT_ENV = "CE_FAULT_EXIT_AFTER_BATCHES"


class IngestWorker:
    def __init__(
        self,
        store: Store,
        host: str,
        port: int,
        *,
        client_id: str = "ingest-0",
        group: str | None = "ingest",
        batch_rows: int = 500,
        batch_ms: int = 50,
        username: str | None = None,
        password: str | None = None,
        on_batch: Callable[[BatchResult], None] | None = None,
    ) -> None:
        self.store = store
        self.host, self.port = host, port
        self.client_id = client_id
        # shared: several workers split the stream; plain: one worker whose persistent session survives a broker
        # restart (Mosquitto 2.0 restores plain subscriptions from persistence, not shared ones)
        self.topic = shared(group, subscription()) if group else subscription()
        self.batch_rows = batch_rows
        self.batch_s = batch_ms / 1000
        self.on_batch = on_batch
        self.q: queue.Queue[object] = queue.Queue()
        self.connected = threading.Event()
        self.batches = 0
        self.errors = 0
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        fault = os.environ.get(FAULT_EXIT_ENV)  # fault injection for tests: die after a commit, before acks
        self._fault_exit_after = int(fault) if fault else None
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, manual_ack=True)
        if username:
            c.username_pw_set(username, password)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(1, 5)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = lambda *_a: self.connected.set()
        self.client = c

    # paho callbacks (network thread) ------------------------------------------------------------

    def _on_connect(self, c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object = None) -> None:
        if rc.is_failure:
            log.warning("ingest connect refused", extra={"rc": str(rc)})
            return
        c.subscribe(self.topic, qos=1)

    def _on_disconnect(self, *_a: object) -> None:
        self.connected.clear()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self.q.put((Inbound(msg.topic, bytes(msg.payload), now_ms()), msg.mid, msg.qos))

    # lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, name=f"{self.client_id}-batcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        """Store and acknowledge what was received, then disconnect."""
        self._stopping.set()
        self.q.put(_STOP)
        if self._thread:
            self._thread.join(timeout)
        self.client.disconnect()
        self.client.loop_stop()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self.q.get()
            if first is _STOP:
                break
            batch = [first]
            # an alarm does not wait for the batch to fill: what is already queued goes with it, now
            deadline = time.monotonic() + (0.0 if _is_alarm(first) else self.batch_s)
            while len(batch) < self.batch_rows:
                try:
                    item = self.q.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
                if _is_alarm(item):
                    deadline = 0.0
            self._commit(batch)  # type: ignore[arg-type]

    def _commit(self, batch: list[tuple[Inbound, int, int]]) -> None:
        while True:
            try:
                res = self.store.write_batch([b[0] for b in batch])
                break
            except Exception:
                # database down or locked: keep the batch (unacknowledged) and retry; never drop it
                self.errors += 1
                log.exception("batch write failed; retrying")
                if self._stopping.wait(min(5.0, 0.2 * self.errors)):
                    return  # stopping with the database still away: unacknowledged, the broker redelivers

        self.batches += 1
        if self._fault_exit_after is not None and self.batches >= self._fault_exit_after:
            os._exit(137)  # stored, not acknowledged: the broker must redeliver, the cloud must dedup
        for _inb, mid, qos in batch:
            if qos > 0:
                self.client.ack(mid, qos)
        if self.on_batch:
            self.on_batch(res)


def _is_alarm(item: object) -> bool:
    """A message on a device's alarm channel (``…/alm``)."""
    return isinstance(item, tuple) and "/alm" in item[0].topic
