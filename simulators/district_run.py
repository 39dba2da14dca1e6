"""A whole district running against a broker and a cloud: the covers' nodes (:mod:`simulators.district`), the
buildings' gateways with their real units on simulated hardware (:mod:`simulators.community`), each gateway
behind its own uplink that can go down (:mod:`simulators.outages`), faults, outages and broker restarts on
a schedule. Used by ``make demo``, ``civicedge sim district`` and the district's end-to-end test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from simulators.community import Community, CommunitySpec, gateway_ids
from simulators.community_shard import gateway_doc
from simulators.district import CoverFleet, District, DistrictSpec, generate, register
from simulators.fleet import InProcessAgents
from simulators.outages import GatewayLinks

log = logging.getLogger("civicedge.sim.district")


@dataclass(frozen=True)
class Schedule:
    """What goes wrong, in district seconds (0: never). ``speed`` district seconds pass per real second."""

    speed: float = 1.0
    heartbeat_s: float = 900.0
    fault_every_s: float = 600.0
    fault_s: float = 900.0
    outage_every_s: float = 0.0
    outage_s: float = 2 * 3600.0
    broker_restart_every_s: float = 0.0
    traffic: bool = True  # residents, visitors, cars and rides on their own; off: only on demand


@dataclass(frozen=True)
class DistrictSize:
    covers: DistrictSpec
    community: CommunitySpec
    schedule: Schedule
    processes: int = 0  # the gateways' processes (0: inside the district's own)


SIZES: dict[str, DistrictSize] = {
    # sized to run smoothly on 2 cores next to the cloud: covers report every 15 district minutes at 30× (every
    # 30 s here), a cover fault every 10 district minutes
    "small": DistrictSize(
        DistrictSpec(covers=300, cells=20),
        CommunitySpec(gates=1, towers=1, elevators=1, sensors=True),
        Schedule(speed=30, fault_every_s=600, fault_s=900),
    ),
    # the real size: 16,000 covers, 50 gates, 10 towers, 20 elevators (gate cameras analysed at 1 frame/s, lift
    # PLCs polled and car boards sampled at 4 Hz), the gateways in 4 processes (niced: they stand for other
    # computers); at 5× (about 90 cover readings a second), a cover fault every 5 district minutes, a gateway
    # offline for an hour every half hour, the broker restarted every 2 hours
    "full": DistrictSize(
        DistrictSpec(),
        CommunitySpec(
            gates=50,
            towers=10,
            elevators=20,
            gate_fps=1.0,
            tower_poll_s=0.25,
            car_board_period_ms=250,
            gate_every_s=60.0,
            tower_every_s=20.0,
        ),
        Schedule(
            speed=5, fault_every_s=300, fault_s=1800, outage_every_s=1800, outage_s=3600, broker_restart_every_s=7200
        ),
        processes=4,
    ),
}


@dataclass
class DistrictRun:
    """Build it with the sizes and the broker; ``register`` through the API; ``start``; ``run`` until stopped;
    ``close``. ``broker`` (a Mosquitto the caller owns) allows scheduled restarts."""

    covers: DistrictSpec
    community: CommunitySpec
    workdir: Path
    broker_host: str
    broker_port: int
    public_key: str
    document_key: str = ""  # the cloud's document key (gallery and allow-list deltas are signed with it)
    schedule: Schedule = field(default_factory=Schedule)
    broker: Any = None
    site: str = "district"
    health_s: float = 10.0
    processes: int = 0  # 0: the gateways run in this process; n: split over n child processes

    def __post_init__(self) -> None:
        self.covers = replace(self.covers, site=self.site)
        self.district: District = generate(self.covers)
        self.gateways = [g for g, _k in gateway_ids(self.community)]
        self.links = GatewayLinks(
            self.gateways,
            self.broker_host,
            self.broker_port,
            broker=self.broker,
            speed=self.schedule.speed,
            outage_every_s=self.schedule.outage_every_s or None,
            outage_s=self.schedule.outage_s,
            broker_restart_every_s=self.schedule.broker_restart_every_s or None,
        )
        self.nodes = CoverFleet(
            self.district,
            self.broker_host,
            self.broker_port,
            speed=self.schedule.speed,
            heartbeat_s=self.schedule.heartbeat_s,
            fault_every_s=self.schedule.fault_every_s or None,
            fault_s=self.schedule.fault_s,
        )
        self.site_sim: Community | None = None
        self.fleet: InProcessAgents | None = None
        self.agents: dict[str, Any] = {}
        self.shards: list[subprocess.Popen[str]] = []

    def register(self, api: Any, progress: Callable[[str], None] = print) -> None:
        """Departments, cells, the registry CSV, the nodes, the gateways and the gates' residents."""
        api.post("/api/sites", json={"id": self.site, "name": self.site.replace("-", " ").title()})
        if self.covers.covers:
            register(self.district, api, progress=progress)
        if self.gateways:
            Community.register_people(api, self.site, self.community)
            progress(
                f"{self.community.gates} gates, {self.community.towers} parking towers, "
                f"{self.community.elevators} elevators registered"
            )

    async def start(self, progress: Callable[[str], None] = lambda _m: None) -> None:
        await self.links.start()
        if self.processes and self.gateways:
            await self._start_shards()
        else:
            self.site_sim = await asyncio.to_thread(Community, self.community, self.workdir / "hardware")
            docs = [
                gateway_doc(
                    self.workdir,
                    self.site,
                    gw,
                    "127.0.0.1",
                    self.links.port(gw),
                    self.public_key,
                    self.health_s,
                    units,
                    self.document_key,
                )
                for gw, units in self.site_sim.units().items()
            ]
            self.fleet = InProcessAgents(docs)
            await self.fleet.start()
            self.agents = {a.config.device.id: a for a in self.fleet.agents}
        progress(f"{len(self.gateways)} gateways connected" + (f" ({self.processes} processes)" if self.shards else ""))

    async def _start_shards(self) -> None:
        """Each share gets every n-th gateway (so each holds some gates, towers and elevators)."""
        (self.workdir / "shards").mkdir(parents=True, exist_ok=True)
        for i in range(self.processes):
            only = self.gateways[i :: self.processes]
            if not only:
                continue
            cfg = {
                "spec": asdict(self.community),
                "workdir": str(self.workdir),
                "only": only,
                "site": self.site,
                "host": self.links.links[only[0]].host,
                "ports": {g: self.links.port(g) for g in only},
                "public_key": self.public_key,
                "document_key": self.document_key,
                "health_s": self.health_s,
                "traffic": self.schedule.traffic,
            }
            path = self.workdir / "shards" / f"shard-{i + 1}.json"
            path.write_text(json.dumps(cfg))
            with open(path.with_suffix(".log"), "ab") as log_file:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "simulators.community_shard", str(path)],
                    stdout=subprocess.PIPE,
                    stderr=log_file,
                    stdin=subprocess.DEVNULL,
                    text=True,
                )
            self.shards.append(proc)
        for i, proc in enumerate(self.shards):
            assert proc.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 300)
            if line.strip() != "ready":
                raise RuntimeError(
                    f"gateway process {i + 1} did not start; see {self.workdir / 'shards' / f'shard-{i + 1}.log'}"
                )

    def outbox(self, gateway: str) -> Path:
        return self.workdir / "agents" / f"{gateway}.db"

    async def run(self, stop: asyncio.Event, answer: Callable[[], Any] | None = None) -> None:
        """Nodes reporting, people coming and going (when ``schedule.traffic``), faults, outages and restarts,
        until ``stop``."""
        assert self.site_sim is not None or self.shards, "start() first"
        async with asyncio.TaskGroup() as tg:
            if self.covers.covers:
                tg.create_task(self.nodes.run(stop))
            tg.create_task(self.links.run(stop))
            if self.schedule.traffic and self.site_sim is not None:
                tg.create_task(self.site_sim.run(self.agents, stop))
            if answer is not None:
                tg.create_task(self._answering(answer, stop))

    @staticmethod
    async def _answering(answer: Callable[[], Any], stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
            try:
                await answer()
            except Exception as exc:  # the cloud restarting: the residents try again
                log.info("answering visitors failed", extra={"reason": str(exc)})

    async def close(self) -> None:
        if self.fleet is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.fleet.stop(), 30)
        for proc in self.shards:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.shards:
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
        await self.links.close()
        if self.site_sim is not None:
            self.site_sim.close()


def answering_residents(api: Any, approve: float = 0.8, seed: int = 17) -> Callable[[], Any]:
    """The residents' phones: every pending visitor request is answered (``approve`` of them let in)."""
    import random

    rng = random.Random(seed)

    async def answer() -> None:
        def sync() -> None:
            r = api.get("/api/visitor-requests", params={"status": "pending", "limit": 50})
            for req in r.json().get("items", []):
                ok = rng.random() < approve
                api.post(
                    f"/api/visitor-requests/{req['request_id']}/answer",
                    json={"approved": ok, "by": f"res-{req['unit']}"},
                )

        await asyncio.to_thread(sync)

    return answer
