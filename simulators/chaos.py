"""Fault scenarios against a real Mosquitto and a real agent process; each returns one JSON-able report.

``edge``: a steady stream of numbered events while the broker restarts twice, the agent is killed -9
mid-burst and restarted, and the network is cut for a while. Every event-lane sequence number the agent
committed must reach the subscriber (``lost`` = 0); duplicates are allowed and counted.

``budget``: the broker is unreachable while a gateway with a small storage budget keeps producing alarms
and telemetry; every alarm must arrive afterwards, telemetry is shed oldest-first and the shed count is
reported in the agent's health heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt

from edge.tasks import cancel_and_wait
from protocol import decode, parse
from protocol.messages import Lane
from simulators.fleet import AgentProcess, agent_config, write_config
from simulators.netcut import NetCut
from simulators.services import Mosquitto

Progress = Callable[[str], None]


class Subscriber:
    """Counts every message by (type, seq) through broker restarts (persistent session)."""

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.received: list[tuple[str, int, str, dict[str, Any]]] = []  # (type, seq, lane, body)
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chaos-subscriber")
        await asyncio.wait_for(self.ready.wait(), 10)

    async def stop(self) -> None:
        if self._task:
            await cancel_and_wait(self._task, raise_errors=True)

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    self.broker.host,
                    self.broker.port,
                    identifier="chaos-subscriber",
                    clean_session=False,
                    max_queued_incoming_messages=0,
                ) as c:
                    await c.subscribe("ce/v1/+/+/+", qos=1)
                    self.ready.set()
                    async for msg in c.messages:
                        with contextlib.suppress(ValueError):
                            env = decode(bytes(msg.payload), parse(str(msg.topic)))
                            self.received.append((env.type, env.seq, env.lane.value, env.body.model_dump(mode="json")))
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)

    def seqs(self, lane: Lane) -> list[int]:
        return [s for t, s, ln, _b in self.received if ln == lane.value and t != "state"]


def committed_seqs(db: Path, lane: Lane) -> int:
    """How many sequence numbers the agent committed on ``lane`` (read from its outbox after it stopped)."""
    from protocol.messages import LANE_PRIORITY

    with contextlib.closing(sqlite3.connect(db)) as conn:
        row = conn.execute("SELECT next_seq FROM lane_seq WHERE lane = ?", (LANE_PRIORITY[lane],)).fetchone()
    return int(row[0]) - 1 if row else 0


def outbox_rows(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
        return int(conn.execute("SELECT (SELECT count(*) FROM outbox) + (SELECT count(*) FROM readings)").fetchone()[0])


async def _wait(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def edge_scenario(
    duration_s: float = 30.0, rate_per_s: float = 200.0, progress: Progress | None = None, workdir: Path | None = None
) -> dict[str, Any]:
    say = progress or (lambda _m: None)
    work = Path(workdir or tempfile.mkdtemp(prefix="ce-chaos-"))
    broker = Mosquitto(workdir=work / "broker")
    broker.start()
    proxy = NetCut(broker.host, broker.port)
    await proxy.start()
    sub = Subscriber(broker)
    await sub.start()
    doc = agent_config(
        work,
        device="chaos-01",
        host=proxy.host,
        port=proxy.port,
        mqtt={"keepalive_s": 5},
        units=[{"type": "ticker", "rate_per_s": rate_per_s, "burst": 10}],
    )
    agent = AgentProcess(write_config(work / "agent.yaml", doc))
    db = work / "chaos-01.db"
    faults: list[dict[str, Any]] = []
    t0 = time.monotonic()

    def note(fault: str) -> None:
        faults.append({"t_s": round(time.monotonic() - t0, 2), "fault": fault})
        say(f"{faults[-1]['t_s']:6.2f}s  {fault}")

    async def at(frac: float) -> None:
        delay = t0 + frac * duration_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    try:
        agent.start()
        note("agent started")
        await at(0.15)
        await asyncio.to_thread(broker.restart)
        note("broker restarted")
        await at(0.35)
        agent.kill()
        note("agent killed -9 mid-burst")
        await asyncio.sleep(0.3)
        agent.start()
        note("agent restarted")
        await at(0.55)
        proxy.cut()
        note("network cut")
        await at(0.7)
        proxy.restore()
        note("network restored")
        await at(0.8)
        await asyncio.to_thread(broker.restart)
        note("broker restarted")
        await at(1.0)
        code = await asyncio.to_thread(agent.stop)
        note(f"agent stopped (exit {code}); {outbox_rows(db)} messages still in its outbox")
        # start it once more without the ticker, so whatever is still in the outbox drains
        drain_doc = {**doc, "units": []}
        write_config(work / "agent.yaml", drain_doc)
        agent.start()
        await _wait(lambda: outbox_rows(db) == 0, timeout=60)
        await asyncio.to_thread(agent.stop)
        note(f"drained; {outbox_rows(db)} left")
        sent = committed_seqs(db, Lane.EVENT)
        await _wait(lambda: set(range(1, sent + 1)) <= set(sub.seqs(Lane.EVENT)), timeout=30)
        got = sub.seqs(Lane.EVENT)
        unique = set(got) & set(range(1, sent + 1))
        return {
            "scenario": "edge",
            "duration_s": round(time.monotonic() - t0, 2),
            "rate_per_s": rate_per_s,
            "sent": sent,
            "received_unique": len(unique),
            "lost": sent - len(unique),
            "duplicates": len(got) - len(set(got)),
            "faults": faults,
            "agent_exit_code": code,
        }
    finally:
        agent.kill()
        await sub.stop()
        await proxy.close()
        broker.close()


async def budget_scenario(
    alarms: int = 200,
    readings: int = 20_000,
    budget_bytes: int = 256 * 1024,
    progress: Progress | None = None,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Offline gateway, small budget: alarms all arrive; telemetry is shed and counted."""
    from edge.agent import Agent
    from edge.config import parse_config
    from protocol.messages import AlarmRaise

    say = progress or (lambda _m: None)
    work = Path(workdir or tempfile.mkdtemp(prefix="ce-budget-"))
    broker = Mosquitto(workdir=work / "broker")
    broker.start()
    sub = Subscriber(broker)
    await sub.start()
    broker.stop()
    say("broker down; gateway keeps producing")
    doc = agent_config(
        work,
        device="budget-01",
        host=broker.host,
        port=broker.port,
        outbox={"budget_bytes": budget_bytes},
        health={"interval_s": 3600},
    )
    agent = Agent(parse_config(doc), handle_signals=False)
    task = asyncio.create_task(agent.run())
    try:
        await agent.ready.wait()
        ob = agent.outbox
        for i in range(readings):
            await ob.put_reading("water_level_cm", float(i % 300), ts=1_795_000_000_000 + i)
            if i % (readings // alarms) == 0 and i // (readings // alarms) < alarms:
                await ob.put(
                    AlarmRaise(
                        key=f"flood:{i}",
                        code="flood",
                        severity="critical",
                        message="water above threshold",
                        details={"n": i},
                    )
                )
        shed = ob.shed_counts()["telemetry"]
        say(f"produced {readings} readings and {alarms} alarms; shed {shed} readings")
        broker.start()
        say("broker back")
        delivered = await _wait(lambda: len([1 for t, *_ in sub.received if t == "alarm.raise"]) >= alarms, 60)
        n_health = sum(t == "health" for t, *_ in sub.received)
        agent.wake_health()  # one heartbeat now, carrying the shed counters
        await _wait(lambda: sum(t == "health" for t, *_ in sub.received) > n_health, 30)
        await _wait(lambda: agent.outbox.depth()["readings"] == 0 and agent.outbox.depth()["telemetry"] == 0, 60)
        health = [b for t, _s, _l, b in sub.received if t == "health"]
        got_alarms = {b["key"] for t, _s, _l, b in sub.received if t == "alarm.raise"}
        got_readings = sum(len(b["readings"]) for t, _s, _l, b in sub.received if t == "telemetry")
        return {
            "scenario": "budget",
            "budget_bytes": budget_bytes,
            "alarms_sent": alarms,
            "alarms_received": len(got_alarms),
            "alarms_lost": alarms - len(got_alarms),
            "all_alarms_delivered": delivered,
            "readings_produced": readings,
            "readings_received": got_readings,
            "readings_shed": shed,
            "health_reported_shed": health[-1]["shed"]["telemetry"] if health else None,
            "accounted": got_readings + shed == readings,
        }
    finally:
        agent.request_stop()
        await task
        await sub.stop()
        broker.close()
