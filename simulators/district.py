"""A district of manhole covers: departments, a grid of cells with their workers, covers of 20 subtypes laid
along streets in a realistic area, and a sensor node under each — generated deterministically, registered
through the real paths (``/api/departments``, ``/api/grid-cells``, the asset CSV import, ``/api/devices``),
and run as nodes that speak the protocol exactly as the firmware does (``manhole.reading`` heartbeats,
``manhole.alarm`` on faults) through a real broker.

Thousands of nodes share a few broker connections here (each message still goes to its own device topic); the
firmware's own behaviour — one connection per wake-up — is covered by ``tests/firmware``.
Time can be accelerated (``speed``): a 15-minute heartbeat at speed 60 comes every 15 s.
"""

from __future__ import annotations

import asyncio
import csv
import io
import itertools
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from protocol import encode, envelope
from protocol.messages import ManholeAlarm, ManholeReading
from protocol.topics import topic

# department → (name, the cover subtypes it owns)
DEPARTMENTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "water": ("Water Authority", ("sewage", "storm_water", "combined_sewer", "water_supply", "reclaimed_water")),
    "fire": ("Fire Brigade", ("fire_hydrant",)),
    "power": ("Power Grid Co.", ("power", "street_lighting")),
    "telecom": ("Telecom Operators", ("telecom", "network_fibre", "cable_tv")),
    "gas": ("Gas Company", ("gas", "petroleum", "industrial_pipeline")),
    "heating": ("Heating and Cooling", ("heating", "district_cooling")),
    "traffic": ("Traffic Police", ("traffic_signal",)),
    "security": ("Public Security Bureau", ("public_security_video", "military_confidential")),
    "environment": ("Environment Bureau", ("environmental_monitoring",)),
}
OWNER = {sub: dept for dept, (_n, subs) in DEPARTMENTS.items() for sub in subs}
# how common each subtype is under a city's streets (relative)
WEIGHTS = {
    "sewage": 18,
    "storm_water": 16,
    "combined_sewer": 5,
    "water_supply": 12,
    "reclaimed_water": 2,
    "fire_hydrant": 4,
    "power": 10,
    "street_lighting": 6,
    "telecom": 8,
    "network_fibre": 5,
    "cable_tv": 2,
    "gas": 6,
    "petroleum": 0.5,
    "industrial_pipeline": 0.5,
    "heating": 2,
    "district_cooling": 0.5,
    "traffic_signal": 1.5,
    "public_security_video": 1,
    "military_confidential": 0.2,
    "environmental_monitoring": 0.3,
}
SURNAMES = ("Li", "Wang", "Zhang", "Liu", "Chen", "Yang", "Zhao", "Huang", "Zhou", "Wu", "Xu", "Sun", "Ma", "Zhu")
GIVEN = ("Wei", "Fang", "Na", "Min", "Jing", "Lei", "Qiang", "Yan", "Jun", "Hui", "Tao", "Ping", "Hong", "Bo")


@dataclass(frozen=True)
class DistrictSpec:
    covers: int = 16_000
    cells: int = 1191
    site: str = "district"
    # a 7 km × 7 km area of a coastal city (south-west corner, north-east corner)
    bbox: tuple[float, float, float, float] = (31.200, 121.430, 31.263, 121.504)
    street_m: float = 120.0  # block size
    seed: int = 7


@dataclass
class Cover:
    asset: str
    node: str
    subtype: str
    department: str
    cell: str
    lat: float
    lon: float


@dataclass
class District:
    spec: DistrictSpec
    cells: list[tuple[str, str, str]]  # id, name, worker
    covers: list[Cover] = field(default_factory=list)

    def csv_lines(self) -> list[str]:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(
            [
                "id",
                "kind",
                "subtype",
                "department_id",
                "grid_cell_id",
                "lat",
                "lon",
                "device_id",
                "install_date",
                "notes",
            ]
        )
        for c in self.covers:
            w.writerow(
                [
                    c.asset,
                    "manhole_cover",
                    c.subtype,
                    c.department,
                    c.cell,
                    f"{c.lat:.6f}",
                    f"{c.lon:.6f}",
                    c.node,
                    "2025-06-01",
                    "",
                ]
            )
        return buf.getvalue().splitlines(keepends=True)


def generate(spec: DistrictSpec = DistrictSpec()) -> District:
    """The same district for the same spec: covers on a street grid, cells tiling the area."""
    rng = random.Random(spec.seed)
    lat0, lon0, lat1, lon1 = spec.bbox
    m_lat = 111_320.0
    m_lon = 111_320.0 * math.cos(math.radians((lat0 + lat1) / 2))
    w_m, h_m = (lon1 - lon0) * m_lon, (lat1 - lat0) * m_lat
    cols = max(1, round(math.sqrt(spec.cells * w_m / h_m)))
    rows = math.ceil(spec.cells / cols)
    cells = []
    for i in range(spec.cells):
        name = f"{rng.choice(SURNAMES)} {rng.choice(GIVEN)}"
        cells.append((f"g-{i + 1:04d}", f"Cell {i // cols + 1}-{i % cols + 1}", name))
    d = District(spec, cells)
    subtypes, weights = list(WEIGHTS), list(WEIGHTS.values())
    for i in range(spec.covers):
        # on a street: one coordinate snapped to the block grid, the other anywhere along it
        x, y = rng.uniform(0, w_m), rng.uniform(0, h_m)
        if rng.random() < 0.5:
            x = round(x / spec.street_m) * spec.street_m + rng.gauss(0, 3)
        else:
            y = round(y / spec.street_m) * spec.street_m + rng.gauss(0, 3)
        x, y = min(max(x, 0), w_m - 0.01), min(max(y, 0), h_m - 0.01)
        cell = min(int(y / h_m * rows) * cols + int(x / w_m * cols), spec.cells - 1)
        sub = rng.choices(subtypes, weights)[0]
        d.covers.append(
            Cover(
                f"cv-{i + 1:05d}",
                f"mh-{i + 1:05d}",
                sub,
                OWNER[sub],
                cells[cell][0],
                lat0 + y / m_lat,
                lon0 + x / m_lon,
            )
        )
    return d


def register(district: District, api: Any, progress: Callable[[str], None] = print) -> None:
    """Through the real API (``api``: an httpx/TestClient-like client): site, departments, grid cells, the
    registry CSV import, and a device for every node."""
    spec = district.spec
    api.post("/api/sites", json={"id": spec.site, "name": "District"})
    for dept, (name, _subs) in DEPARTMENTS.items():
        api.post("/api/departments", json={"id": dept, "name": name})
    for cid, name, worker in district.cells:
        api.post("/api/grid-cells", json={"id": cid, "name": name, "worker_name": worker})
    progress(f"{len(district.cells)} grid cells, {len(DEPARTMENTS)} departments")
    r = api.post("/api/assets/import", content="".join(district.csv_lines()).encode())
    if r.status_code >= 400:
        raise RuntimeError(f"registry import refused: {r.text[:500]}")
    progress(f"{r.json()['imported']} covers imported through the registry CSV")
    for i in range(0, len(district.covers), 5000):
        chunk = district.covers[i : i + 5000]
        r = api.post(
            "/api/devices/bulk",
            json={"devices": [{"id": c.node, "site_id": spec.site, "kind": "manhole", "name": c.asset} for c in chunk]},
        )
        if r.status_code >= 400:
            raise RuntimeError(f"registering the nodes was refused: {r.text[:500]}")
    progress(f"{len(district.covers)} nodes registered")


@dataclass
class Fault:
    node: str
    kind: str  # tilt / flood / gas
    until: float  # monotonic


class CoverFleet:
    """Every cover's node: a heartbeat reading every ``heartbeat_s`` (district time), faults on demand or on a
    schedule (``fault_every_s``), each fault an alarm raised and, once it ends, cleared."""

    def __init__(
        self,
        district: District,
        host: str,
        port: int,
        *,
        speed: float = 1.0,
        heartbeat_s: float = 900.0,
        fault_every_s: float | None = None,
        fault_s: float = 600.0,
        per_connection: int = 2000,
        seed: int = 11,
    ) -> None:
        self.d = district
        self.host, self.port = host, port
        self.speed, self.heartbeat_s = speed, heartbeat_s
        self.fault_every_s, self.fault_s = fault_every_s, fault_s
        self.per_connection = per_connection
        self.rng = random.Random(seed)
        self.faults: dict[str, Fault] = {}
        self.seq: dict[str, int] = {}
        self.sent = 0
        # what the nodes' radios send, faults first: every real node has its own radio, so a fault's reading and
        # alarm never wait behind the district's heartbeats (here they share a few connections)
        self._queue: asyncio.PriorityQueue[tuple[int, int, tuple[str, bytes, str]]] = asyncio.PriorityQueue(10_000)
        self._order = itertools.count()
        self.by_node = {c.node: c for c in district.covers}
        self._bases: dict[str, tuple[float, float, float]] = {}
        self._inflight = 0  # publishes awaiting their PUBACK

    def _payload(self, node: str, body: Any, channel: str) -> tuple[str, bytes, str]:
        n = self.seq[node] = self.seq.get(node, 0) + 1
        return topic(self.d.spec.site, node, channel), encode(envelope(body, dev=node, seq=n)), channel

    def _base(self, node: str) -> tuple[float, float, float]:
        """A node's resting tilt, water level and battery (sensors drift slowly, they do not jump)."""
        b = self._bases.get(node)
        if b is None:
            b = self._bases[node] = (self.rng.uniform(0, 1.5), self.rng.uniform(10, 60), self.rng.uniform(3.5, 3.9))
        return b

    def reading(self, node: str) -> tuple[str, bytes, str]:
        f = self.faults.get(node)
        tilt0, water0, batt = self._base(node)
        tilt = 14.0 if f and f.kind == "tilt" else round(abs(tilt0 + self.rng.gauss(0, 0.05)), 2)
        # steady at rest: under accelerated time any noise would read as a fast rise
        water = 180.0 if f and f.kind == "flood" else round(water0, 1)
        gas = 22.0 if f and f.kind == "gas" else round(self.rng.uniform(0, 1), 1)
        body = ManholeReading(
            tilt_deg=tilt,
            battery_v=round(batt, 2),
            water_level_cm=water,
            gas_lel=gas,
            temperature_c=round(self.rng.uniform(12, 22), 1),
            rssi_dbm=round(self.rng.uniform(-110, -80), 0),
        )
        return self._payload(node, body, "tele")

    async def inject(self, node: str, kind: str, for_s: float | None = None) -> None:
        """A fault now: the node reports the reading and its alarm at once (as the firmware wakes on motion)."""
        self.faults[node] = Fault(node, kind, time.monotonic() + (for_s or self.fault_s) / self.speed)
        value, threshold = {"tilt": (14.0, 5.0), "flood": (180.0, 150.0), "gas": (22.0, 10.0)}[kind]
        await self._send(self.reading(node), urgent=True)
        await self._send(
            self._payload(
                node,
                ManholeAlarm.model_validate({"kind": kind, "active": True, "value": value, "threshold": threshold}),
                "alm",
            ),
            urgent=True,
        )

    async def _clear(self, f: Fault) -> None:
        del self.faults[f.node]
        await self._send(self.reading(f.node), urgent=True)
        await self._send(
            self._payload(
                f.node,
                ManholeAlarm.model_validate({"kind": f.kind, "active": False, "value": 0.0, "threshold": 0.0}),
                "alm",
            ),
            urgent=True,
        )

    async def _send(self, item: tuple[str, bytes, str], urgent: bool = False) -> None:
        await self._queue.put((0 if urgent else 1, next(self._order), item))

    async def run(self, stop: asyncio.Event) -> None:
        nconn = max(1, math.ceil(len(self.d.covers) / self.per_connection))
        async with asyncio.TaskGroup() as tg:
            senders = [tg.create_task(self._sender(i)) for i in range(nconn)]
            beat = tg.create_task(self._heartbeats(stop))
            await stop.wait()
            beat.cancel()
            while not self._queue.empty() or self._inflight:
                await asyncio.sleep(0.05)
            for s in senders:
                s.cancel()

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        """Each node once per heartbeat period, spread evenly: every 10 ms, as many readings as are due by then
        (sleeping per message would be paced by the timer's resolution, not by the district)."""
        nodes = [c.node for c in self.d.covers]
        rate = len(nodes) * self.speed / self.heartbeat_s  # readings per real second
        start = time.monotonic()
        next_fault = start + (self.fault_every_s or 0) / self.speed
        i = 0
        while not stop.is_set():
            now = time.monotonic()
            due = int((now - start) * rate) + 1
            while i < due:
                await self._send(self.reading(nodes[i % len(nodes)]))
                i += 1
            for f in [f for f in self.faults.values() if f.until <= now]:
                await self._clear(f)
            if self.fault_every_s and now >= next_fault:
                next_fault = now + self.fault_every_s / self.speed
                await self.inject(self.rng.choice(nodes), self.rng.choice(("tilt", "tilt", "flood", "gas")))
            await asyncio.sleep(0.01)

    async def _sender(self, i: int) -> None:
        while True:
            try:
                async with aiomqtt.Client(self.host, self.port, identifier=f"district-nodes-{i}") as c:
                    while True:
                        _urgent, _n, (t, payload, _ch) = await self._queue.get()
                        self._inflight += 1
                        try:
                            await c.publish(t, payload, qos=1)
                            self.sent += 1
                        finally:
                            self._inflight -= 1
            except aiomqtt.MqttError:
                await asyncio.sleep(0.5)  # the broker restarted: reconnect and go on
