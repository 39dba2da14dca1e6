"""The district simulator: a deterministic district registered through the real paths (registry CSV import,
devices) and nodes speaking the protocol through the broker; a fault on a cover becomes an alarm and a work
order for the department that owns what runs under it, in the right grid cell."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from simulators.district import DEPARTMENTS, OWNER, CoverFleet, DistrictSpec, generate, register
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
