"""The gateway's own status page and /healthz, served by a running agent with a real gate unit (simulated
camera, I/O board simulator on a pty), read over HTTP as a technician's laptop would."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.agent import Agent
from edge.status import page
from simulators.camera import enrol_photo
from simulators.fleet import gate_unit
from simulators.ioboard import IOBoardSim
from simulators.services import Mosquitto
from simulators.thermal import Scene
from tests.conftest import RunAgent
from tests.waits import until


@pytest.fixture
def board() -> Iterator[IOBoardSim]:
    b = IOBoardSim()
    yield b
    b.close()


def _gate(tmp_path: Path, port: str) -> dict[str, Any]:
    return gate_unit(port, tmp_path / "gallery.db", camera={"type": "simulated", "fps": 10}, cooldown_s=1.0)


async def _get(agent: Agent, path: str) -> httpx.Response:
    assert agent.status_server is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{agent.status_server.port}", timeout=10) as c:
        return await c.get(path)


async def test_a_technician_sees_the_gate_working(
    tmp_path: Path, mosquitto: Mosquitto, run_agent: RunAgent, board: IOBoardSim
) -> None:
    enrol_photo(tmp_path / "gallery.db", b"device-secret", "res-astronaut", unit="12-0304")
    agent: Agent = await run_agent(units=[_gate(tmp_path, board.port)])
    await until(lambda: agent.status_server is not None and agent.units and agent.uplink.connected.is_set(), 30)
    gate: Any = agent.units[0]
    await until(lambda: gate.camera is not None and gate.camera_rate.per_s() > 0.5, 30, "frames from the camera")
    gate.camera.arrive("astronaut", Scene(distance_m=0.6), dwell_s=2.0)
    await until(lambda: len(gate.decisions) > 0, 30, "the gate to decide")

    health = await _get(agent, "/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok", "online": True, "storage": "ok"}

    state = (await _get(agent, "/status.json")).json()
    assert state["device"] == "gate-01" and state["cloud"]["online"] is True
    (unit,) = state["units"]
    assert unit["name"] == "gate" and unit["state"] == "running" and unit["camera_fps"] > 0.5
    assert unit["decisions"][-1]["decision"] == "open" and unit["decisions"][-1]["reason"] == "resident_match"
    assert unit["decisions"][-1]["at"] and unit["residents"] == 1
    assert "res-astronaut" not in json.dumps(state)  # who came is not for a page on the gate's network

    html = await _get(agent, "/")
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    assert (
        "gate-01 · ok" in html.text
        and "camera_fps" in html.text
        and "default-src 'none'" in html.headers["content-security-policy"]
    )
    assert (await _get(agent, "/nope")).status_code == 404

    # the disk fills: the page and /healthz say so (503 for a monitor that only reads the code)
    agent.outbox.storage = "full"
    failing = await _get(agent, "/healthz")
    assert failing.status_code == 503 and failing.json()["status"] == "failing"
    agent.outbox.storage = "ok"

    # the broker goes away: alive but degraded
    mosquitto.stop()
    await until(lambda: not agent.uplink.connected.is_set(), 30, "the agent to notice")
    offline = await _get(agent, "/healthz")
    assert offline.status_code == 200 and offline.json() == {"status": "degraded", "online": False, "storage": "ok"}


async def test_the_page_shows_text_as_text_and_answers_only_reads(mosquitto: Mosquitto, run_agent: RunAgent) -> None:
    evil = "<script>alert(1)</script>"
    state = {
        "status": "ok",
        "device": evil,
        "site": evil,
        "version": "0.1.0",
        "uptime_s": 1.0,
        "cloud": {"online": True, "broker": evil, "last_publish_ms": None, "connects": 1},
        "outbox": {
            "depth": {},
            "bytes": 0,
            "budget_bytes": 1 << 20,
            "storage": "ok",
            "shed": {},
            "refused": {},
            "disk_free_bytes": None,
        },
        "units": [{"name": evil, "state": "running", evil: evil, "decisions": [{"reason": evil}]}],
    }
    out = page(state)
    assert "<script>" not in out and "&lt;script&gt;" in out
    agent: Agent = await run_agent()
    await until(lambda: agent.status_server is not None, 10)
    assert agent.status_server is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{agent.status_server.port}", timeout=10) as c:
        assert (await c.post("/healthz")).status_code == 405
    # a client that sends garbage and hangs up does not hurt the agent
    reader, writer = await asyncio.open_connection("127.0.0.1", agent.status_server.port)
    writer.write(b"\x00" * 20000)
    await writer.drain()
    assert (await reader.read()).startswith(b"HTTP/1.1 400")
    writer.close()
    assert (await _get(agent, "/healthz")).status_code == 200

    # a page elsewhere that points its own name at the gateway (DNS rebinding through an SSH tunnel): refused
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{agent.status_server.port}", timeout=10) as c:
        assert (await c.get("/status.json", headers={"Host": "attacker.example"})).status_code == 421

    # idle connections cannot pile up: past a handful the next one is closed at once, and they time out
    port = agent.status_server.port
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(8)]
    await until(lambda: agent.status_server._slots.locked(), 5, "the idle clients to take every slot")
    r9, w9 = await asyncio.open_connection("127.0.0.1", port)
    assert await asyncio.wait_for(r9.read(), 2) == b"" and agent.status_server.turned_away >= 1
    w9.close()
    for _r, w in idle:
        w.close()
    assert (await _get(agent, "/healthz")).status_code == 200  # their slots are free again
