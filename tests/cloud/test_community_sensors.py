"""Gas, perimeter, water and throwing gateways through a real broker to the cloud with its default rules: each
unit's alarm arrives, the serious ones become work orders, snapshots and frame strips are stored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from simulators.gas_detector import GasDetectorSim
from simulators.ioboard import IOBoardSim
from simulators.water_meters import WaterMeterBus
from tests.cloud.conftest import MakeCloud
from tests.conftest import ROOT
from tests.waits import until


async def test_community_sensor_alarms_reach_the_cloud(make_cloud: MakeCloud, run_agent: Any, tmp_path: Path) -> None:
    svc, api = make_cloud(rules_file=ROOT / "cloud" / "rules" / "default.yaml")
    api.post("/api/sites", json={"id": "riverside", "name": "Riverside"})
    for dev, kind in (("gas-b2", "gas"), ("fence-01", "perimeter"), ("meters-12", "water"), ("facade-12", "throwing")):
        assert api.post("/api/devices", json={"id": dev, "site_id": "riverside", "kind": kind}).status_code == 201
    assert svc.commands is not None
    keys = svc.device_keys()
    detector, valve_board, fence_board = GasDetectorSim(), IOBoardSim(), IOBoardSim()
    bus = WaterMeterBus(2, clock_scale=1800)
    bus.meters[1].leak_lph = 20.0
    try:
        gas = await run_agent(
            device="gas-b2",
            **keys,
            outbox={"path": str(tmp_path / "gas.db")},
            units=[
                {
                    "type": "gas",
                    "detector": "plant-b2",
                    "source": {"type": "modbus", "plc": {"type": "rtu", "port": detector.port}},
                    "io": {"type": "ioboard", "port": valve_board.port, "outputs": {"valve": 0}, "watchdog_s": None},
                    "on_high": ["valve"],
                    "poll_s": 0.2,
                }
            ],
        )
        fence = await run_agent(
            device="fence-01",
            **keys,
            outbox={"path": str(tmp_path / "fence.db")},
            units=[
                {
                    "type": "perimeter",
                    "io": {"type": "ioboard", "port": fence_board.port, "inputs": {"beam": 0}, "watchdog_s": None},
                    "zones": {"north": {"input": "beam", "debounce_s": 0.2}},
                    "camera": {"type": "simulated", "fps": 5},
                }
            ],
        )
        meters = {
            f"m{i}": {
                "household": f"12-0{i}03",
                "source": {"type": "modbus", "plc": {"type": "rtu", "port": bus.port, "baud": 9600}, "unit_id": i},
            }
            for i in (1, 2)
        }
        await run_agent(
            device="meters-12",
            **keys,
            outbox={"path": str(tmp_path / "water.db")},
            units=[{"type": "water", "meters": meters, "poll_s": 60, "clock_scale": 1800}],
        )
        facade = await run_agent(
            device="facade-12",
            **keys,
            outbox={"path": str(tmp_path / "facade.db")},
            units=[
                {
                    "type": "throwing",
                    "facade": "block-12-south",
                    "camera": {"type": "facade_sim", "seed": 5},
                    "keep_dir": str(tmp_path / "evidence"),
                }
            ],
        )

        def alarm(device: str, code: str) -> Any:
            items = api.get("/api/alarms", params={"device": device}).json()["items"]
            return next((a for a in items if a["code"] == code), None)

        async def media(device: str, ref: str) -> Any:
            # the alarm travels on the priority lane, its picture after it on the bulk lane
            def stored() -> Any:
                r = api.get(f"/api/media/{device}/{ref}")
                return r if r.status_code == 200 else None

            return await until(stored, 60, f"media {ref} uploaded", thread=True)

        detector.lel = 28.0
        high = await until(lambda: alarm("gas-b2", "high"), 60, "the gas alarm in the cloud", thread=True)
        assert high["severity"] == "critical" and valve_board.output(0)

        await until(lambda: fence.units and fence.units[0].armed, 60, "the fence armed")
        fence_board.set_input(0, True)
        intrusion = await until(lambda: alarm("fence-01", "intrusion"), 60, "the intrusion", thread=True)
        snap = await media("fence-01", intrusion["details"]["snapshot_ref"])
        assert snap.content[:2] == b"\xff\xd8"

        leak = await until(lambda: alarm("meters-12", "leak"), 60, "the leak", thread=True)
        assert leak["details"]["household"] == "12-0103"

        unit = facade.units[0]
        await until(lambda: unit.frames > 30, 60, "the facade camera running")
        unit.camera.drop(15)
        thrown = await until(lambda: alarm("facade-12", "throwing"), 60, "the throwing alarm", thread=True)
        assert thrown["details"]["floor_low"] <= 15 <= thrown["details"]["floor_high"]
        strip = await media("facade-12", thrown["details"]["frames_ref"])
        assert strip.content[:2] == b"\xff\xd8"
        kept = tmp_path / "evidence" / f"{thrown['details']['frames_ref']}.jpg"
        assert kept.read_bytes() == strip.content  # the same evidence stays on the gateway

        def orders() -> Any:
            items = api.get("/api/work-orders", params={"limit": 50}).json()["items"]
            got = {w["device_id"] for w in items}
            return items if {"gas-b2", "fence-01", "meters-12", "facade-12"} <= got else None

        wos = await until(orders, 60, "work orders from the rules", thread=True)
        by_device = {w["device_id"]: w for w in wos}
        assert by_device["gas-b2"]["priority"] == "urgent" and by_device["meters-12"]["priority"] == "normal"
        assert gas.units[0].tripped
    finally:
        detector.close()
        valve_board.close()
        fence_board.close()
        bus.close()
