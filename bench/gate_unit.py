"""The gate unit's own latencies, with the real unit code and drivers:

* ``open_ms``: a resident's frame handed to the unit → the I/O board simulator's relay energised (vision,
  decision, the serial frame to the board and its answer) — one process, one clock;
* ``visitor_roundtrip_ms``: the visitor presses "call" → the request reaches the cloud through a real
  Mosquitto → the resident app (here: an immediate approval through the cloud's API layer) → the signed command
  back through the broker → the relay energised. An in-process agent, a cloud node on SQLite.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.stats import percentile
from edge.drivers.camera import Frame
from edge.tasks import cancel_and_wait


class PushCamera:
    """Frames handed in by the benchmark: ``read`` returns the next one, or an empty corridor."""

    def __init__(self, empty: Frame) -> None:
        self.empty = empty
        self.q: asyncio.Queue[Frame] = asyncio.Queue()

    async def read(self) -> Frame:
        try:
            async with asyncio.timeout(0.05):
                return await self.q.get()
        except TimeoutError:
            return self.empty

    async def close(self) -> None:
        return None


async def open_latency(work: Path, n: int = 40) -> dict[str, float]:
    from edge.outbox import Outbox
    from edge.units.base import UnitContext
    from edge.units.gate import GateUnit
    from edge.units.gate_config import GateConfig
    from simulators.camera import SimulatedCamera
    from simulators.ioboard import IOBoardSim
    from simulators.thermal import Scene

    board = IOBoardSim()
    cam = SimulatedCamera()
    cfg = GateConfig.model_validate(
        {
            "type": "gate",
            "io": {"type": "ioboard", "port": board.port, "outputs": {"lock": 0}, "inputs": {}, "watchdog_s": None},
            "door_contact": None,
            "fire": None,
            "secret": "bench",
            "gallery": str(work / "gallery.db"),
            "camera": {"type": "simulated"},  # frames come from the PushCamera below, with their thermal bursts
            "open_s": 0.05,
            "cooldown_s": 0,
        }
    )
    empty = Frame(cam.background.copy(), cam.thermal.frames(Scene(kind="empty"), 4))
    push = PushCamera(empty)
    unit = GateUnit(cfg, camera=push)
    from edge.vision.detect import FaceDetector
    from edge.vision.embed import Embedder
    from simulators.camera import photo

    a = photo("astronaut")
    det, emb = FaceDetector(), Embedder(1)
    unit.gallery.enroll("res-astronaut", [emb.embed(a, det.refine(a, det.detect(a)[0]))])
    outbox = await Outbox(work / "outbox.db", "gate-bench").open()
    task = asyncio.create_task(unit.run(UnitContext("gate-bench", outbox, lambda *_: None)))
    while unit.vision is None or board.requests < 3:
        await asyncio.sleep(0.02)
    frames = [
        Frame(cam.frame("astronaut", s), cam.thermal.frames(s, 4))
        for s in (
            cam.thermal.random_scene(distance_m=float(d), core_c=36.8, kind="person")
            for d in np.linspace(0.45, 0.75, n)
        )
    ]
    lat = []
    for f in frames:
        before = len(board.history)
        t0 = time.monotonic()
        push.q.put_nowait(f)
        deadline = t0 + 5
        while time.monotonic() < deadline:
            ons = [ts for ts, ch, on in board.history[before:] if on]
            if ons:
                lat.append((ons[0] - t0) * 1000)
                break
            await asyncio.sleep(0.001)
        while len(board.history) - before < 2 and time.monotonic() < deadline + 1:  # the pulse ends
            await asyncio.sleep(0.005)
    await cancel_and_wait(task)
    await outbox.close()
    board.close()
    return {
        "open_ms_p50": percentile(lat, 50, 2),
        "open_ms_p99": percentile(lat, 99, 2),
        "opened": len(lat),
        "frames": n,
    }


async def visitor_roundtrip(work: Path, n: int = 15) -> dict[str, float]:
    from cloud.service import CloudService
    from cloud.settings import Settings
    from edge.agent import Agent
    from edge.config import parse_config
    from simulators.fleet import agent_config
    from simulators.ioboard import IOBoardSim
    from simulators.services import Mosquitto

    with Mosquitto(workdir=work / "broker") as broker:
        svc = CloudService(
            Settings(
                database_url=f"sqlite:///{work / 'cloud.db'}",
                broker_url=broker.url,
                command_key_file=work / "key.pem",
                ingest_batch_ms=5,
                _env_file=None,
            )
        )
        svc.start()
        from cloud.db import schema as t

        with svc.engine.begin() as conn:
            conn.execute(t.sites.insert().values(id="riverside", name="Riverside", created_ms=0))
            conn.execute(
                t.devices.insert().values(id="gate-01", site_id="riverside", kind="gate", name="", created_ms=0)
            )
            from cloud.gate import tables as rg

            # the cloud forwards a call only to a flat someone lives in
            conn.execute(rg.residents.insert().values(id="res-1203", site_id="riverside", unit="1203", created_ms=0))
        svc.workers[0].connected.wait(10)
        board = IOBoardSim()
        unit = {
            "type": "gate",
            "io": {"type": "ioboard", "port": board.port, "outputs": {"lock": 0}, "inputs": {}, "watchdog_s": None},
            "door_contact": None,
            "fire": None,
            "secret": "bench",
            "gallery": str(work / "agent-gallery.db"),
            "camera": {"type": "simulated", "fps": 2},
            "open_s": 0.05,
        }
        assert svc.commands is not None
        doc = agent_config(work, host=broker.host, port=broker.port, **svc.device_keys(), units=[unit])
        agent = Agent(parse_config(doc), handle_signals=False)
        run = asyncio.create_task(agent.run())
        while not agent.units or getattr(agent.units[0], "vision", None) is None or not agent.uplink.connected.is_set():  # type: ignore[union-attr]
            if run.done():  # the agent stopped: say why instead of waiting for ever
                raise RuntimeError(f"the gate's agent stopped: {run.exception() or run.result()}")
            await asyncio.sleep(0.05)
        gate: Any = agent.units[0]
        from sqlalchemy import select

        from cloud.gate import tables as g

        def approve_first_pending() -> bool:
            with svc.engine.connect() as c:
                row = c.execute(
                    select(g.visitor_requests.c.request_id).where(g.visitor_requests.c.status == "pending")
                ).first()
            if row is None:
                return False
            svc.gate.answer(row.request_id, True, "res-1203")
            return True

        times = []
        for _ in range(n):
            before = len(board.history)
            t0 = time.monotonic()
            call = asyncio.create_task(gate.keypad("1203#"))
            deadline = time.monotonic() + 30
            while not await asyncio.to_thread(approve_first_pending):
                if time.monotonic() > deadline:  # the cloud refused the call: say why instead of waiting for ever
                    with svc.engine.connect() as c:
                        why = c.execute(select(t.dead_letters.c.reason, t.dead_letters.c.detail)).fetchall()
                    raise RuntimeError(f"no visitor request reached the cloud; dead letters: {why[-3:]}")
                await asyncio.sleep(0.005)
            while not [ts for ts, ch, on in board.history[before:] if on]:
                await asyncio.sleep(0.002)
            ons = [ts for ts, ch, on in board.history[before:] if on]
            times.append((ons[0] - t0) * 1000)
            await call
            while len(board.history) - before < 2:
                await asyncio.sleep(0.005)
        agent.request_stop()
        await run
        board.close()
        svc.stop()
    return {
        "visitor_roundtrip_ms_p50": percentile(times, 50, 2),
        "visitor_roundtrip_ms_p99": percentile(times, 99, 2),
        "visitor_calls": n,
    }


def run(frames: int = 40, calls: int = 15) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="ce-bench-gate-unit-") as tmp:
            work = Path(tmp)
            (work / "a").mkdir()
            (work / "b").mkdir()
            out = await open_latency(work / "a", frames)
            out.update(await visitor_roundtrip(work / "b", calls))
            return out

    return asyncio.run(main())
