"""The MQTT uplink: the one owner of the broker connection and of reconnection.

On every connect it announces ``online`` (retained; the last will says ``offline``), re-subscribes to its
command/config/gallery topics, and drains the outbox: highest lane first, in order per lane, up to
``inflight`` QoS 1 publishes awaiting PUBACK; a message leaves the outbox only when its PUBACK arrived.
A lost connection fails the whole connection task group; unacknowledged messages are sent again after
reconnecting (duplicates, never losses). Reconnects back off with capped, jittered exponential delays.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt

from edge.config import AgentConfig, read_secret
from edge.outbox import LANES, Outbox, OutMessage
from protocol.codec import encode
from protocol.envelope import envelope, now_ms
from protocol.errors import ProtocolError
from protocol.messages import DeviceState, Lane
from protocol.signing import signed
from protocol.topics import Channel, Topic, parse, subscription, topic

log = logging.getLogger("civicedge.edge.uplink")
_mqtt_log = logging.getLogger("civicedge.edge.mqtt")

MessageHandler = Callable[[Topic, bytes], Awaitable[None]]
STOP_FLUSH_S = 5.0  # on SIGTERM, keep draining committed messages this long
FAULT_EXIT_ENV = "CE_FAULT_EXIT_AFTER_PUBACKS"  # fault injection for tests: die between PUBACK and delete


class TokenBucket:
    """Paces the backlog drain; ``rate`` 0 means unlimited."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.capacity = burst or max(1.0, rate / 10)
        self.tokens = self.capacity
        self.t = asyncio.get_running_loop().time()

    async def take(self) -> None:
        if self.rate <= 0:
            return
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            self.tokens = min(self.capacity, self.tokens + (now - self.t) * self.rate)
            self.t = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            await asyncio.sleep((1 - self.tokens) / self.rate)


class Uplink:
    def __init__(self, config: AgentConfig, outbox: Outbox, on_message: MessageHandler, version: str) -> None:
        self.config = config
        self.outbox = outbox
        self.on_message = on_message
        self.version = version
        self.connected = asyncio.Event()
        self._stop = asyncio.Event()
        self.published = 0
        self.connects = 0
        self.last_publish_ms: int | None = None
        self.unhandled: dict[str, int] = {}
        self.connect_hooks: list[Callable[[], Awaitable[None]]] = []
        fault = os.environ.get(FAULT_EXIT_ENV)
        self._fault_exit_after = int(fault) if fault else None

    # --- topics ----------------------------------------------------------------------------------

    def _topic(self, channel: Channel, name: str | None = None) -> str:
        d = self.config.device
        return topic(d.site, d.id, channel, name)

    def _state_payload(self, status: str) -> bytes:
        d = self.config.device
        body = DeviceState(status=status, agent_version=self.version, kind=d.kind, since_ts=now_ms())  # type: ignore[arg-type]
        return encode(signed(self.outbox.signer, envelope(body, dev=d.id, seq=0)))

    def _client(self) -> aiomqtt.Client:
        m = self.config.mqtt
        tls: dict[str, Any] = {}
        if m.tls is not None:
            ctx = ssl.create_default_context(cafile=str(m.tls.ca_file))
            if m.tls.cert_file and m.tls.key_file:
                ctx.load_cert_chain(str(m.tls.cert_file), str(m.tls.key_file))
            if m.tls.insecure:
                ctx.check_hostname = False
            tls = {"tls_context": ctx, "tls_insecure": m.tls.insecure}
        client = aiomqtt.Client(
            m.host,
            m.port,
            username=m.username,
            password=read_secret(m.password_file) if m.password_file else m.password,
            identifier=self.config.client_id,
            clean_session=False,
            keepalive=m.keepalive_s,
            timeout=min(10, m.keepalive_s),  # a stuck CONNECT/SUBSCRIBE fails fast and reconnects
            will=aiomqtt.Will(self._topic(Channel.STATE), self._state_payload("offline"), qos=1, retain=True),
            max_inflight_messages=m.inflight,
            logger=_mqtt_log,
            **tls,
        )
        client.pending_calls_threshold = m.inflight + 50  # a full window is normal here, not a warning
        return client

    # --- lifecycle -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish in-flight publishes, say offline, disconnect; :meth:`run` then returns."""
        self._stop.set()

    async def run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                async with self._client() as client:
                    attempt = 0
                    self.connects += 1
                    await self._session(client)
            except* (aiomqtt.MqttError, OSError) as group:
                log.warning("broker connection lost", extra={"error": str(group.exceptions[0])[:200]})
            finally:
                self.connected.clear()
            if self._stop.is_set():
                break
            delay = random.uniform(0, min(self.config.mqtt.backoff_max_s, 1.5 ** min(10, attempt)))
            attempt += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._stop.wait()

    async def _session(self, client: aiomqtt.Client) -> None:
        await client.publish(self._topic(Channel.STATE), self._state_payload("online"), qos=1, retain=True)
        d = self.config.device
        for channel in ("cmd/+", Channel.CFG.value, Channel.GALLERY.value):
            await client.subscribe(subscription(d.site, d.id, channel), qos=1)
        self.connected.set()
        log.info("connected", extra={"host": self.config.mqtt.host, "port": self.config.mqtt.port})
        for hook in self.connect_hooks:
            try:
                await hook()
            except Exception:  # a unit's hook must not take the link down
                log.exception("connect hook failed")
        async with asyncio.TaskGroup() as tg:
            receiver = tg.create_task(self._receive(client), name="uplink-receive")
            await self._drain(client, tg)
            # stopping: say goodbye explicitly (a clean disconnect does not fire the will)
            await client.publish(self._topic(Channel.STATE), self._state_payload("offline"), qos=1, retain=True)
            receiver.cancel()

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for msg in client.messages:
            payload = msg.payload if isinstance(msg.payload, bytes | bytearray) else str(msg.payload).encode()
            try:
                top = parse(str(msg.topic))
            except ProtocolError:
                self.unhandled[str(msg.topic)[:100]] = self.unhandled.get(str(msg.topic)[:100], 0) + 1
                continue
            try:
                await self.on_message(top, bytes(payload))
            except Exception:
                log.exception("handler failed", extra={"topic": str(msg.topic)})

    async def _drain(self, client: aiomqtt.Client, tg: asyncio.TaskGroup) -> None:
        m = self.config.mqtt
        window = asyncio.Semaphore(m.inflight)
        bucket = TokenBucket(m.drain_rate_per_s)
        after: dict[Lane, int] = dict.fromkeys(LANES, 0)
        inflight: set[asyncio.Task[None]] = set()
        fetch_limit = min(m.inflight, 500)
        if m.drain_rate_per_s > 0:
            fetch_limit = max(1, min(fetch_limit, int(m.drain_rate_per_s / 10)))

        async def publish(msg: OutMessage) -> None:
            try:
                await client.publish(self._topic(msg.channel), msg.payload, qos=1, timeout=30)
            finally:
                window.release()
            self.published += 1
            self.last_publish_ms = now_ms()
            if self._fault_exit_after is not None and self.published >= self._fault_exit_after:
                os._exit(137)  # fault injection: acknowledged by the broker, not yet deleted here
            self.outbox.ack(msg.row)

        loop = asyncio.get_running_loop()
        stop_deadline: float | None = None
        while True:
            if self._stop.is_set():
                # stopping: send what is already committed, for a bounded time, then leave the rest on disk
                stop_deadline = stop_deadline or loop.time() + STOP_FLUSH_S
                if loop.time() > stop_deadline:
                    break
            self.outbox.new_data.clear()
            batch = await self.outbox.fetch(fetch_limit, after)
            if not batch:
                if self._stop.is_set():
                    break
                await _first(self.outbox.new_data.wait(), self._stop.wait(), timeout=1.0)
                continue
            paced = bucket.rate > 0
            for msg in batch:
                if paced and msg.lane is not Lane.ALARM:
                    await bucket.take()
                await window.acquire()
                after[msg.lane] = msg.row
                task = tg.create_task(publish(msg), name="uplink-publish")
                inflight.add(task)
                task.add_done_callback(inflight.discard)
        if inflight:
            await asyncio.wait(inflight, timeout=5)
        await self.outbox.wait_acks_flushed()


async def _first(*aws: Awaitable[Any], timeout: float) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
