"""``civicedge sim demo`` starts, serves live devices, and stops cleanly on Ctrl-C; the amqtt fallback works."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt
import httpx

from simulators.demo import AmqttBroker
from simulators.services import free_port


def test_demo_runs_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "civicedge_cli", "sim", "demo", "--port", str(port), "--covers", "40"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    try:
        password = ""
        for line in proc.stdout:
            if "user: demo" in line:
                password = line.split("password:")[1].strip()
            if "Ctrl-C stops everything" in line:
                break
        api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
        assert api.get("/api/devices").status_code == 401  # the demo has an admin: the API needs a login
        assert api.post("/auth/login", json={"username": "demo", "password": password}).status_code == 200
        assert api.get("/console/").status_code == 200
        deadline = time.monotonic() + 60
        while True:
            devs = api.get("/api/devices", params={"limit": 1000}).json()["items"]
            gateways = [d for d in devs if d["kind"] != "manhole"]
            covers = [d for d in devs if d["kind"] == "manhole"]
            if all(d["status"] == "online" for d in gateways) and any(d["last_seen_ms"] for d in covers):
                break
            assert time.monotonic() < deadline, devs
            time.sleep(0.2)
        assert {d["id"] for d in gateways} == {
            "gate-01",
            "tower-01",
            "lift-01",
            "gas-01",
            "fence-01",
            "facade-01",
            "meters-01",
        } and len(covers) == 40
        # the gate recognises the demo's resident, and the tower parks cars
        deadline = time.monotonic() + 90
        while True:
            gate = api.get("/api/gate/decisions", params={"decision": "open"}).json()["total"]
            lifts = api.get("/api/events", params={"device": "tower-01", "type": "lift.result"}).json()["total"]
            rides = api.get("/api/events", params={"device": "lift-01", "type": "elevator.status"}).json()["total"]
            if gate and lifts and rides:
                break
            assert time.monotonic() < deadline, (gate, lifts, rides)
            time.sleep(0.5)
        assert api.get("/api/assets", params={"limit": 1}).json()["total"] == 40  # the district's registry
        # the estate's sensors report: the gas level, the fence's zones armed or not
        gas = api.get("/api/devices/gas-01/telemetry", params={"metric": "gas.boiler-room.lel"}).json()
        assert gas["points"], gas
        armed = api.get("/api/events", params={"device": "fence-01", "type": "event"}).json()["items"]
        assert {e["body"]["code"] for e in armed} & {"perimeter.armed", "perimeter.disarmed"}
        assert api.get("/console/sensors").status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out
    assert "stopped." in out and "Traceback" not in out


async def test_embedded_amqtt_broker_fallback() -> None:
    broker = AmqttBroker(free_port())
    broker.start()
    try:
        async with aiomqtt.Client(broker.host, broker.port) as sub:
            await sub.subscribe("ce/v1/s/d/evt", qos=1)
            async with aiomqtt.Client(broker.host, broker.port) as pub:
                await pub.publish("ce/v1/s/d/evt", b"hello", qos=1)
            async with asyncio.timeout(10):
                msg = await anext(aiter(sub.messages))
        assert msg.payload == b"hello"
    finally:
        broker.close()
