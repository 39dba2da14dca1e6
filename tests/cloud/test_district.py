"""The district simulator: a deterministic district registered through the real paths (registry CSV import,
devices) and nodes speaking the protocol through the broker; a fault on a cover becomes an alarm and a work
order for the department that owns what runs under it, in the right grid cell."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import select

from cloud.db.schema import messages as svc_messages
from protocol.messages import Lane
from simulators.chaos import committed_seqs
from simulators.community import CommunitySpec
from simulators.district import DEPARTMENTS, OWNER, CoverFleet, DistrictSpec, generate, register
from simulators.district_run import DistrictRun, Schedule
from simulators.services import Mosquitto
from tests.cloud.conftest import MakeCloud
from tests.conftest import ROOT
from tests.waits import until


def test_the_district_is_deterministic_and_realistic() -> None:
    spec = DistrictSpec(covers=3000, cells=120)
    a, b = generate(spec), generate(spec)
    assert [(c.asset, c.subtype, c.cell, c.lat) for c in a.covers] == [
        (c.asset, c.subtype, c.cell, c.lat) for c in b.covers
    ]
    subtypes = Counter(c.subtype for c in a.covers)
    assert len(subtypes) >= 19 and subtypes.most_common(1)[0][0] in ("sewage", "storm_water")
    assert {c.department for c in a.covers} == set(DEPARTMENTS)
    assert all(c.department == OWNER[c.subtype] for c in a.covers)
    lat0, lon0, lat1, lon1 = spec.bbox
    assert all(lat0 <= c.lat <= lat1 and lon0 <= c.lon <= lon1 for c in a.covers)
    assert len({c.cell for c in a.covers}) > 100  # covers spread over the cells
    assert len(a.csv_lines()) == 3001


async def test_a_cover_fault_becomes_the_owners_work_order(make_cloud: MakeCloud, mosquitto: Mosquitto) -> None:
    _svc, api = make_cloud(rules_file=ROOT / "cloud" / "rules" / "default.yaml")
    district = generate(DistrictSpec(covers=60, cells=12, site="riverside"))
    await asyncio.to_thread(register, district, api, lambda _m: None)
    assert api.get("/api/assets", params={"limit": 1}).json()["total"] == 60
    fleet = CoverFleet(district, mosquitto.host, mosquitto.port, speed=60, heartbeat_s=60)
    stop = asyncio.Event()
    task = asyncio.create_task(fleet.run(stop))
    try:

        def readings() -> Any:
            return api.get("/api/events", params={"type": "manhole.reading", "limit": 1}).json()["total"] >= 30

        await until(readings, 20, "heartbeats from the nodes", thread=True)
        power = next(c for c in district.covers if c.department == "power")
        water = next(c for c in district.covers if c.department == "water")
        await fleet.inject(power.node, "tilt", for_s=3000)
        await fleet.inject(water.node, "gas", for_s=3000)

        def orders() -> Any:
            items = api.get("/api/work-orders").json()["items"]
            return {w["asset_id"]: w for w in items} if len(items) >= 2 else None

        wos = await until(orders, 40, "work orders for both faults", thread=True)
        assert (wos[power.asset]["department_id"], wos[power.asset]["grid_cell_id"]) == ("power", power.cell)
        assert wos[power.asset]["priority"] == "high" and wos[power.asset]["state"] == "dispatched"
        assert (wos[water.asset]["department_id"], wos[water.asset]["priority"]) == ("water", "urgent")
        alarms = api.get("/api/alarms", params={"state": "open"}).json()["items"]
        # only the two faulty nodes alarm (node alarms and rule alarms), not the healthy ones
        assert {a["device_id"] for a in alarms} == {power.node, water.node}, [
            (a["device_id"], a["key"]) for a in alarms
        ]
        assert {(a["device_id"], a["severity"]) for a in alarms} >= {(water.node, "critical"), (power.node, "major")}
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_the_district_end_to_end(make_cloud: MakeCloud, mosquitto: Mosquitto, tmp_path: Path) -> None:
    """A small district on a real broker and cloud: covers, a gate, a parking tower and an elevator on their real
    units; a cover tilts, a resident comes home, a visitor is let in, a car is called back, a passenger is
    trapped while the elevator's gateway is offline, the broker restarts — and the gateway's backlog arrives
    complete."""
    svc, api = make_cloud(rules_file=ROOT / "cloud" / "rules" / "default.yaml")
    run = DistrictRun(
        DistrictSpec(covers=40, cells=8),
        CommunitySpec(gates=1, towers=1, elevators=1),
        tmp_path / "district",
        mosquitto.host,
        mosquitto.port,
        svc.device_keys()["public_key"],
        svc.device_keys()["document_key"],
        schedule=Schedule(speed=60, heartbeat_s=60, fault_every_s=0, traffic=False),
        broker=mosquitto,
        site="riverside",
        health_s=2,
    )
    await asyncio.to_thread(run.register, api, lambda _m: None)
    await run.start()
    stop = asyncio.Event()
    task = asyncio.create_task(run.run(stop))
    try:
        gate, tower, lift = (run.agents[g].units[0] for g in ("gate-01", "tower-01", "lift-01"))
        community = run.site_sim
        assert community is not None

        def get(path: str, **params: Any) -> Any:
            return api.get(path, params=params).json()

        # a cover tilts: a work order for the department that owns it
        cover = next(c for c in run.district.covers if c.department == "telecom")
        await run.nodes.inject(cover.node, "tilt", for_s=6000)

        def order() -> Any:
            return next((w for w in get("/api/work-orders")["items"] if w["asset_id"] == cover.asset), None)

        wo = await until(order, 40, "the cover's work order", thread=True)
        assert (wo["department_id"], wo["grid_cell_id"]) == ("telecom", cover.cell)

        # a resident comes home: the gate knows her face from the cloud's gallery
        await until(lambda: len(gate.gallery) == 1, 30, "the gate's gallery from the cloud")
        community.resident_arrives(gate)
        await until(lambda: community.boards["gate-01"].pulses(0), 20, "the door to open for the resident")

        # a visitor rings flat 1203 and the resident lets them in from the phone
        call = asyncio.create_task(community.visitor_rings(gate))
        (req,) = await until(
            lambda: get("/api/visitor-requests", unit="1203", status="pending")["items"], 20, "the request", thread=True
        )
        r = await asyncio.to_thread(
            api.post, f"/api/visitor-requests/{req['request_id']}/answer", json={"approved": True, "by": "res-1203"}
        )
        assert r.status_code == 200, r.text
        assert (await asyncio.wait_for(call, 20))["result"] == "open"

        # a car is parked, then its driver calls it back from the phone
        assert await community.car_arrives("tower-01", tower, "car-e2e")
        r = await asyncio.to_thread(api.post, "/api/parking/tower-01/retrieve", json={"subject": "car-e2e"})
        assert r.status_code == 202, r.text

        def retrieved() -> Any:
            results = get("/api/events", device="tower-01", type="lift.result", limit=50)["items"]
            return [e for e in results if e["body"]["kind"] == "retrieve" and e["body"]["ok"]]

        await until(retrieved, 60, "the car to be retrieved", thread=True)

        # the elevator's gateway loses its uplink; a passenger is trapped meanwhile; the broker restarts
        run.links.outage("lift-01")
        trap = asyncio.create_task(asyncio.to_thread(community.entrapment, "lift-01", 24.0))
        await until(lambda: "trapped" in lift.active, 40, "the unit to see the entrapment while offline")
        await run.links.restart_broker()
        await trap  # released: the alarm clears, also while offline
        assert "trapped" not in lift.active
        # the cloud has not heard of it yet (it may have noticed the gateway is offline)
        assert not [a for a in get("/api/alarms", device="lift-01")["items"] if "trapped" in a["key"]]
        run.links.restore("lift-01")

        def trapped() -> Any:
            alarms = get("/api/alarms", device="lift-01")["items"]
            return [a for a in alarms if "trapped" in a["key"]]

        (alarm,) = await until(trapped, 30, "the entrapment alarm after the reconnect", thread=True)
        assert alarm["severity"] == "critical"

        # the backlog arrived complete: every alarm and event the gateway committed is stored, none twice
        def stored(lane_alarm: bool) -> list[int]:
            c = svc_messages.c
            q = select(c.seq).where(c.device_id == "lift-01", c.seq > 0)  # seq 0: presence, not the outbox
            q = q.where(c.channel == "alm") if lane_alarm else q.where(c.channel.not_in(("alm", "tele")))
            with svc.engine.connect() as conn:
                return sorted(r[0] for r in conn.execute(q))

        db = run.outbox("lift-01")

        def complete() -> bool:
            return all(
                set(range(1, committed_seqs(db, lane) + 1)) <= set(stored(lane == Lane.ALARM))
                for lane in (Lane.ALARM, Lane.EVENT)
            )

        await until(complete, 30, "the gateway's backlog", thread=True)
        alarms, events = stored(True), stored(False)
        # raised and cleared while offline, both delivered, none twice
        assert len(alarms) == len(set(alarms)) >= 2 and len(events) == len(set(events)) >= 3
        assert run.links.log.events[0][1:] == ("lift-01", "down")
        await until(
            lambda: (
                not [a for a in get("/api/alarms", device="lift-01", state="open")["items"] if "offline" in a["key"]]
            ),
            30,
            "the gateway to be back online",
            thread=True,
        )
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await run.close()
