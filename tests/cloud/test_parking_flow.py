"""A driver's phone asks for the car through the cloud API: the signed command reaches the tower's agent
through Mosquitto, the lift fetches the car over Modbus, and the result comes back to the cloud."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simulators.parking_tower import Tower
from tests.cloud.conftest import MakeCloud, register
from tests.waits import until as _until


async def until(cond: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    return await _until(cond, timeout, what, thread=True)


async def test_retrieve_request_from_the_api_reaches_the_lift_and_completes(
    make_cloud: MakeCloud, run_agent: Any, tmp_path: Path
) -> None:
    svc, client = make_cloud()
    register(client, "st-mary", "tower-east")
    tower = Tower(lifts=2, floors=6, bays=4, speed=20, transport="tcp")
    tower.park(1, 4, 2, "night-car")
    try:
        unit = {
            "type": "parking_lift",
            "tower": "east",
            "plc": {"type": "tcp", "host": tower.host, "port": tower.port},
            "lifts": 2,
            "floors": 6,
            "bays": 4,
            "poll_s": 0.05,
            "state": str(tmp_path / "parking.db"),
            "clock_scale": 20,
        }
        assert svc.commands is not None
        agent = await run_agent(site="st-mary", device="tower-east", **svc.device_keys(), units=[unit])
        await until(lambda: agent.units and agent.units[0].ready.is_set(), 10, "the lift unit")
        lift = agent.units[0]
        lift.cars["res-3302"] = (1, 4, 2)  # parked overnight (the tower's bay map)
        r = await asyncio.to_thread(client.post, "/api/parking/tower-east/retrieve", json={"subject": "res-3302"})
        assert r.status_code == 202, r.text

        def results() -> list[dict[str, Any]]:
            items = client.get("/api/parking/tower-east/requests").json()["items"]
            return [i["body"] for i in items if i["type"] == "lift.result"]

        (done,) = await until(results, 20, "the result in the cloud")
        assert done["ok"] and done["kind"] == "retrieve" and done["bay"] == "1-4-2"
        assert not tower.bay_cars
        status = client.get("/api/parking/tower-east/status").json()["lifts"]
        assert {s["lift"] for s in status} >= {"east-1"}
        assert client.post("/api/parking/nowhere/retrieve", json={"subject": "x"}).status_code == 404
        bad = client.post("/api/parking/tower-east/retrieve", json={"subject": "京A12345"})
        assert bad.status_code == 422
    finally:
        tower.close()
