"""Gateway outages and broker restarts, on a schedule or on demand.

Every gateway of the district reaches the broker through its own :class:`~simulators.netcut.NetCut` — its
uplink — so one can go offline for hours (district time) while it keeps working and buffering, and come back
with its backlog. When the district owns its broker (a :class:`~simulators.services.Mosquitto`), it is also
restarted now and then; everyone reconnects and nothing committed is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

from simulators.netcut import NetCut

log = logging.getLogger("civicedge.sim.outages")


@dataclass
class OutageLog:
    """What happened, for the run's summary: (monotonic time, gateway or "broker", "down"/"up")."""

    events: list[tuple[float, str, str]] = field(default_factory=list)

    def add(self, what: str, state: str) -> None:
        self.events.append((time.monotonic(), what, state))
        log.info("outage", extra={"what": what, "state": state})


class GatewayLinks:
    def __init__(
        self,
        gateways: list[str],
        host: str,
        port: int,
        *,
        broker: Any = None,
        speed: float = 1.0,
        outage_every_s: float | None = None,
        outage_s: float = 2 * 3600,
        broker_restart_every_s: float | None = None,
        seed: int = 13,
    ) -> None:
        self.links = {g: NetCut(host, port) for g in gateways}
        self.broker = broker
        self.speed = speed
        self.outage_every_s, self.outage_s = outage_every_s, outage_s
        self.broker_restart_every_s = broker_restart_every_s
        self.rng = random.Random(seed)
        self.log = OutageLog()
        self._restores: set[asyncio.Task[None]] = set()

    def port(self, gateway: str) -> int:
        return self.links[gateway].port

    async def start(self) -> None:
        for link in self.links.values():
            await link.start()

    async def close(self) -> None:
        for t in self._restores:
            t.cancel()
        for link in self.links.values():
            await link.close()

    def down(self) -> list[str]:
        return [g for g, link in self.links.items() if link.is_cut]

    def outage(self, gateway: str, for_s: float | None = None) -> None:
        """Cut ``gateway`` off now; with ``for_s`` (district seconds), restore it after that."""
        self.links[gateway].cut()
        self.log.add(gateway, "down")
        if for_s is not None:
            task = asyncio.create_task(self._restore_after(gateway, for_s / self.speed))
            self._restores.add(task)
            task.add_done_callback(self._restores.discard)

    def restore(self, gateway: str) -> None:
        self.links[gateway].restore()
        self.log.add(gateway, "up")

    async def _restore_after(self, gateway: str, real_s: float) -> None:
        await asyncio.sleep(real_s)
        self.restore(gateway)

    async def restart_broker(self) -> None:
        if self.broker is None:
            raise RuntimeError("this district does not own its broker, so it cannot restart it")
        self.log.add("broker", "down")
        await asyncio.to_thread(self.broker.restart)
        self.log.add("broker", "up")

    async def run(self, stop: asyncio.Event) -> None:
        """Outages and restarts on their schedules until ``stop``; every link restored at the end."""
        now = time.monotonic()
        next_out = now + (self.outage_every_s or 0) / self.speed
        next_restart = now + (self.broker_restart_every_s or 0) / self.speed
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
            now = time.monotonic()
            up = [g for g, link in self.links.items() if not link.is_cut]
            if self.outage_every_s and now >= next_out and up:
                next_out = now + self.outage_every_s / self.speed
                self.outage(self.rng.choice(up), self.outage_s)
            if self.broker_restart_every_s and self.broker is not None and now >= next_restart:
                next_restart = now + self.broker_restart_every_s / self.speed
                try:
                    await self.restart_broker()
                except Exception:
                    log.exception("broker restart failed")
        for g in self.down():
            self.restore(g)
