"""What a gateway writes to its card (SD wear): a real agent with a gate unit (simulated camera, the I/O board
simulator on a pty) publishing to a real Mosquitto, measured by the kernel's own accounting of the bytes this
process sent to the block device (``/proc/self/io`` ``write_bytes``: the outbox, its WAL and checkpoints, the
gallery). First an idle window (heartbeats, the camera looking at an empty corridor), then a busy one with a
resident arriving every few seconds; the day is extrapolated for ``passages`` decisions. Logs go to journald,
capped separately (docs/deployment.md#logs): the lines the agent logged are counted and reported too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def _written() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no write_bytes (a kernel without task I/O accounting)")


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines = 0
        self.bytes = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.lines += 1
        self.bytes += len(record.getMessage()) + 120  # journald's own fields, roughly


async def _run(work: Path, idle_s: float, busy_s: float, every_s: float, passages: int) -> dict[str, Any]:
    from edge.agent import Agent
    from edge.config import parse_config
    from simulators.camera import enrol_photo
    from simulators.fleet import agent_config, gate_unit
    from simulators.ioboard import IOBoardSim
    from simulators.services import Mosquitto
    from simulators.thermal import Scene

    enrol_photo(work / "gallery.db", b"device-secret", "res-1", unit="12-0304")
    board = IOBoardSim()
    broker = Mosquitto(workdir=work / "mqtt")
    broker.start()
    gate = gate_unit(board.port, work / "gallery.db", camera={"type": "simulated", "fps": 10}, cooldown_s=1.0)
    doc = agent_config(work, host=broker.host, port=broker.port, units=[gate], health={"interval_s": 60})
    counter = _Count()
    logging.getLogger("civicedge").addHandler(counter)
    agent = Agent(parse_config(doc), handle_signals=False)
    task = asyncio.create_task(agent.run())
    try:
        deadline = time.monotonic() + 60

        def up() -> bool:  # the unit's camera open and its models loaded, the uplink connected
            unit = agent.units[0] if agent.units else None
            ready = (
                unit is not None
                and getattr(unit, "camera", None) is not None
                and getattr(unit, "vision", None) is not None
            )
            return ready and agent.uplink is not None and agent.uplink.connected.is_set()

        while not up():
            if time.monotonic() > deadline:
                raise RuntimeError("the agent did not come up within 60 s")
            await asyncio.sleep(0.1)
        unit: Any = agent.units[0]
        await asyncio.sleep(2)  # models loaded, first heartbeat out: measure steady state only
        w0 = _written()
        await asyncio.sleep(idle_s)
        w1 = _written()
        before = len(unit.decisions)
        lines0 = counter.lines
        end = time.monotonic() + busy_s
        while time.monotonic() < end:
            unit.camera.arrive("astronaut", Scene(distance_m=0.6), dwell_s=1.0)
            await asyncio.sleep(every_s)
        await agent.outbox.wait_acks_flushed()
        w2 = _written()
        decisions = len(unit.decisions) - before
    finally:
        agent.request_stop()
        await task
        logging.getLogger("civicedge").removeHandler(counter)
        broker.close()
        board.close()
    idle_rate = (w1 - w0) / idle_s
    per_decision = max(0.0, (w2 - w1) - idle_rate * busy_s) / max(decisions, 1)
    per_day = idle_rate * 86_400 + per_decision * passages
    log_per_day = counter.bytes / (idle_s + busy_s) * 86_400 if counter.lines else 0.0
    return {
        "idle_s": idle_s,
        "busy_s": busy_s,
        "decisions": decisions,
        "idle_bytes_per_s": round(idle_rate),
        "bytes_per_decision": round(per_decision),
        "passages_per_day": passages,
        "bytes_per_day": round(per_day),
        "mb_per_day": round(per_day / 1e6, 1),
        "gb_per_year": round(per_day * 365 / 1e9, 2),
        "log_lines": counter.lines,
        "log_lines_busy": counter.lines - lines0,
        "log_bytes_per_day_estimate": round(log_per_day),
    }


def run(idle_s: float = 130.0, busy_s: float = 60.0, every_s: float = 3.0, passages: int = 2000) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ce-wear-", dir=os.environ.get("CE_WEAR_DIR")) as tmp:
        return asyncio.run(_run(Path(tmp), idle_s, busy_s, every_s, passages))
