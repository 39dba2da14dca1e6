"""A subscriber for tests: records every message and lets a test await a condition (no sleeps)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import aiomqtt

from edge.tasks import cancel_and_wait
from protocol import Envelope, decode, parse


class Collector:
    """Subscribes (QoS 1, persistent session) and decodes everything it receives."""

    def __init__(self, host: str, port: int, filt: str = "ce/v1/#", identifier: str = "test-collector") -> None:
        self.host, self.port, self.filt, self.identifier = host, port, filt, identifier
        self.messages: list[tuple[str, Envelope]] = []
        self.raw: list[tuple[str, bytes]] = []
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.subscribed.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        await cancel_and_wait(self._task, raise_errors=True)

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(self.host, self.port, identifier=self.identifier, clean_session=False) as c:
                    await c.subscribe(self.filt, qos=1)
                    self.subscribed.set()
                    async for msg in c.messages:
                        payload = bytes(msg.payload)  # type: ignore[arg-type]
                        self.raw.append((str(msg.topic), payload))
                        with contextlib.suppress(ValueError):
                            self.messages.append((str(msg.topic), decode(payload, parse(str(msg.topic)))))
                        async with self._changed:
                            self._changed.notify_all()
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)  # broker down (fault test): retry until it is back

    async def wait_for(self, cond: Callable[[Collector], Any], timeout: float = 20.0) -> None:
        async with asyncio.timeout(timeout):
            async with self._changed:
                await self._changed.wait_for(lambda: bool(cond(self)))

    def of_type(self, type_name: str) -> list[Envelope]:
        return [e for _t, e in self.messages if e.type == type_name]

    def events(self, code: str) -> list[Envelope]:
        return [e for e in self.of_type("event") if e.body.code == code]  # type: ignore[attr-defined]
