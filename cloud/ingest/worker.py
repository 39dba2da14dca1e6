"""An ingestion worker: a shared-subscription MQTT consumer that acknowledges only durable batches.

paho runs with ``manual_ack=True``: a message's PUBACK is sent only after the batch holding it committed. A
worker killed mid-batch leaves its messages unacknowledged in its persistent session (fixed client id,
``clean_session=False``); the broker redelivers them when the worker reconnects, and the unique message id
turns any that were already stored into counted duplicates.

Nothing a device sends stops it: the store dead-letters a message that fails (:meth:`Store.write_batch`), and
only a failure of the database itself is retried, with a capped, jittered backoff and the batch kept. The
queue between the network thread and the batcher is bounded: when the store is slow the network thread waits
to hand over the next message, so the broker holds the rest. :meth:`IngestWorker.health` tells how far behind
the worker is.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from cloud.ingest.store import BatchResult, Decoded, Inbound, Part, Store, database_failure, decode_one, gather, now_ms
from protocol.topics import UPLINK, Channel, shared, subscription

log = logging.getLogger("civicedge.cloud.ingest")
_STOP = object()
#: the lanes a node ingests on, each with its own broker connection: a device's alarm does not queue behind the
#: district's readings (the broker delivers one connection's messages in order, so under a backlog an alarm on
#: the same connection waits for every reading before it)
LANES: dict[str, frozenset[Channel]] = {"data": UPLINK - {Channel.ALM}, "alarms": frozenset({Channel.ALM})}
#: a message as received: what it was, its packet id, its QoS, and what validating it found
Item = tuple[Inbound, int, int, Part]
FAULT_EXIT_ENV = "CE_FAULT_EXIT_AFTER_BATCHES"
#: payload bytes waiting between the network thread and the batcher, at most (each is held validated, several
#: times its size: a count alone would let large messages at QoS 0, which the broker does not hold back, fill
#: the memory while the database is slow)
QUEUE_BYTES_MAX = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    """How far behind one worker is. ``oldest_pending_s``: age of the oldest message received and not yet
    committed (0 when nothing waits); a worker is stalled when that passes the configured limit."""

    worker: str
    connected: bool
    queue_depth: int
    oldest_pending_s: float
    last_commit_ms: int | None
    retrying: bool
    stalled: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "worker": self.worker,
            "connected": self.connected,
            "queue_depth": self.queue_depth,
            "oldest_pending_s": round(self.oldest_pending_s, 3),
            "last_commit_ms": self.last_commit_ms,
            "retrying": self.retrying,
            "stalled": self.stalled,
        }


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
        queue_max: int = 5000,
        stall_s: float = 30.0,
        channels: frozenset[Channel] = UPLINK,
    ) -> None:
        self.store = store
        self.host, self.port = host, port
        self.client_id = client_id
        # shared: several workers split the stream; plain: one worker whose persistent session survives a broker
        # restart (Mosquitto 2.0 restores plain subscriptions from persistence, not shared ones)
        self._group = group
        filters = [subscription(channel=ch.value) for ch in sorted(channels, key=lambda c: c.value)]
        self.topics = [shared(group, f) if group else f for f in filters]
        self.batch_rows = batch_rows
        self.batch_s = batch_ms / 1000
        self.on_batch = on_batch
        # bounded: a full queue blocks paho's network thread in on_message, so it stops reading and the broker
        # keeps what is not yet taken (in the session, for this client)
        self.q: queue.Queue[object] = queue.Queue(maxsize=max(queue_max, batch_rows))
        self._queued_bytes = 0
        self._bytes_free = threading.Condition()
        self.stall_s = stall_s
        self.connected = threading.Event()
        self.batches = 0
        self.errors = 0  # database failures retried, in total
        self.after_commit_errors = 0
        self.last_commit_ms: int | None = None
        # two stages, so validating a batch overlaps writing the one before (the database works, and releases
        # the interpreter, while the next batch is parsed): the batcher collects and decodes, the writer commits
        # and acknowledges, in the order received. At most one decoded batch waits between them.
        self._ready: queue.Queue[tuple[list[Item], Decoded] | None] = queue.Queue(maxsize=1)
        # the batches taken from the queue and not yet committed, oldest first (being written, waiting, being
        # collected): what health reports as pending
        self._inflight: deque[list[Item]] = deque()
        self._inflight_lock = threading.Lock()
        self._retrying = False
        self._thread: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        self._stopping = threading.Event()
        fault = os.environ.get(FAULT_EXIT_ENV)  # fault injection for tests: die after a commit, before acks
        self._fault_exit_after = int(fault) if fault else None
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, manual_ack=True)
        if username:
            c.username_pw_set(username, password)
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(1, 5)
        c.suppress_exceptions = True  # a callback's error is logged; the network thread never dies of it
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
        # a session kept from before the lanes (one filter for every channel) would bring alarms to this lane
        # too, behind its readings: drop it (the broker answers an unknown filter with success)
        legacy = {subscription(), *(shared(g, subscription()) for g in [self._group] if g)} - set(self.topics)
        if legacy:
            c.unsubscribe(sorted(legacy))
        c.subscribe([(t, 1) for t in self.topics])

    def _on_disconnect(self, *_a: object) -> None:
        self.connected.clear()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        try:
            top = msg.topic
        except UnicodeDecodeError:  # only a broker that breaks MQTT sends this; the store refuses it as a bad topic
            top = bytes(msg._topic).decode("utf-8", "replace")
        payload = bytes(msg.payload)
        with self._bytes_free:  # never blocks a message alone: one larger than the bound still goes through
            while self._queued_bytes and self._queued_bytes + len(payload) > QUEUE_BYTES_MAX:
                if self._stopping.is_set():
                    break
                self._bytes_free.wait(0.5)
            self._queued_bytes += len(payload)
        inbound = Inbound(top, payload, now_ms())
        # validated here, on the network thread, as it arrives: handing the interpreter to another thread between
        # the network thread's small reads (a message is several) costs more than the validation itself
        self.q.put((inbound, msg.mid, msg.qos, decode_one(inbound)))

    # health ---------------------------------------------------------------------------------------

    def health(self) -> WorkerHealth:
        """Queue depth, age of the oldest message not yet committed, last commit: from any thread."""
        with self._inflight_lock:
            stages = [list(b) for b in self._inflight]
        with self.q.mutex:
            head = self.q.queue[0] if self.q.queue else None
            depth = len(self.q.queue)
        firsts = [stage[0][0].received_ms for stage in stages if stage]
        if isinstance(head, tuple):
            firsts.append(head[0].received_ms)
        oldest = (now_ms() - min(firsts)) / 1000 if firsts else 0.0
        return WorkerHealth(
            worker=self.client_id,
            connected=self.connected.is_set(),
            queue_depth=depth + sum(len(stage) for stage in stages),
            oldest_pending_s=max(0.0, oldest),
            last_commit_ms=self.last_commit_ms,
            retrying=self._retrying,
            stalled=oldest > self.stall_s,
        )

    # lifecycle ------------------------------------------------------------------------------------

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._run, name=f"{self.client_id}-batcher", daemon=True)
        self._writer = threading.Thread(target=self._write_loop, name=f"{self.client_id}-writer", daemon=True)
        self._writer.start()
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        """Store and acknowledge what was received, then disconnect."""
        self._stopping.set()
        self.q.put(_STOP)
        deadline = time.monotonic() + timeout
        for thread in (self._thread, self._writer):
            if thread:
                thread.join(max(0.0, deadline - time.monotonic()))
        self.client.disconnect()
        self.client.loop_stop()

    def _run(self) -> None:
        """The batcher: collect a batch, decode it, hand it to the writer (waiting while the writer is busy)."""
        try:
            self._collect()
        finally:
            self._ready.put(None)

    def _collect(self) -> None:
        stopping = False
        while not stopping:
            first = self.q.get()
            if first is _STOP:
                break
            batch: list[Item] = [first]  # type: ignore[list-item]
            with self._inflight_lock:
                self._inflight.append(batch)
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
                batch.append(item)  # type: ignore[arg-type]
                if _is_alarm(item):
                    deadline = 0.0
            taken = sum(len(b[0].payload) for b in batch)
            with self._bytes_free:
                self._queued_bytes -= taken
                self._bytes_free.notify_all()
            self._ready.put((batch, gather([b[3] for b in batch])))

    def _write_loop(self) -> None:
        """The writer: commit each decoded batch, then acknowledge its messages and run the after-commit work."""
        abandoned = False  # stopping with the database away: what follows stays unacknowledged too, in order
        while (item := self._ready.get()) is not None:
            batch, decoded = item
            try:
                abandoned = abandoned or not self._commit(batch, decoded)
            finally:
                with self._inflight_lock:
                    self._inflight.popleft()

    def _commit(self, batch: list[Item], decoded: Decoded) -> bool:
        """Write ``batch`` until it commits (True) or the worker stops with the database away (False)."""
        attempt = 0
        while True:
            try:
                res = self.store.write_decoded(decoded)
                break
            except Exception as exc:
                # the database is away (or failing in a way no message explains): keep the batch unacknowledged
                # and try again; never drop it, never acknowledge it early
                self.errors += 1
                self._retrying = True
                attempt += 1
                what = "database unavailable" if database_failure(exc) else "batch write failed unexpectedly"
                log.warning(f"{what}; retrying", extra={"attempt": attempt, "error": f"{type(exc).__name__}: {exc}"})
                if self._stopping.wait(random.uniform(0.2, min(10.0, 0.2 * 1.5**attempt))):
                    return False  # stopping with the database still away: unacknowledged, the broker redelivers
        self._retrying = False
        self.batches += 1
        self.last_commit_ms = now_ms()
        if self._fault_exit_after is not None and self.batches >= self._fault_exit_after:
            os._exit(137)  # stored, not acknowledged: the broker must redeliver, the cloud must dedup
        for _inb, mid, qos, _part in batch:
            if qos > 0:
                self.client.ack(mid, qos)
        if self.on_batch:
            try:
                self.on_batch(res)
            except Exception:  # rules, live push, sync: their failure never stops ingestion
                self.after_commit_errors += 1
                self.store.metrics.inc("ce_ingest_after_commit_errors_total", 1, "failures after a batch committed")
                log.exception("after-commit work failed")
        return True


def _is_alarm(item: object) -> bool:
    """A message on a device's alarm channel (``ce/v1/<site>/<device>/alm``)."""
    return isinstance(item, tuple) and item[0].topic.endswith("/alm")
