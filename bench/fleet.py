"""``civicedge bench fleet``: the district against one cloud node for a fixed district period.

The cloud runs as its own process (``civicedge cloud run``, SQLite, the default rules) so its memory is its
own; a real Mosquitto; the district registered through the real paths; every node's heartbeats at the chosen
speed, and faults injected on a schedule. Reported:

* ``msgs_per_s``: device messages stored per second;
* ``alarm_to_console_ms_p50/p99``: from a fault's injection to its alarm arriving on the console's live
  channel (SSE, logged in as an operator);
* ``lost``: messages the nodes published that the cloud did not store; ``duplicates_stored``;
* ``cloud_rss_mb``: the cloud process's peak resident memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from bench.stats import percentile
from edge.outbox import Outbox
from protocol.envelope import now_ms
from protocol.messages import DeviceEvent, Reading, TelemetryBatch
from simulators.district import CoverFleet, DistrictSpec, generate, register
from simulators.fleet import AgentProcess, agent_config, write_config
from simulators.services import Mosquitto, free_port

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench operator pw"


class Live(threading.Thread):
    """The console's live channel, read as a browser would: alarm events with the time they arrived."""

    def __init__(self, base: str, cookies: httpx.Cookies) -> None:
        super().__init__(name="sse", daemon=True)
        self.base, self.cookies = base, cookies
        self.raised: dict[str, float] = {}  # device → first alarm seen (monotonic)
        self.ready = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        with (
            httpx.Client(base_url=self.base, cookies=self.cookies, timeout=None) as c,
            c.stream("GET", "/console/live") as r,
        ):
            event = ""
            for line in r.iter_lines():
                self.ready.set()
                if self.stop.is_set():
                    return
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "alarm":
                    ev = json.loads(line[6:])
                    if ev.get("event") == "raised":
                        self.raised.setdefault(ev["device_id"], time.monotonic())


async def _fill(path: Path, device: str, hours: float) -> int:
    """What a busy gateway builds up offline: a reading batch and an event every two seconds."""
    outbox = await Outbox(path, device).open()
    n = int(hours * 1800)
    t0 = now_ms() - int(hours * 3_600_000)
    futs = []
    for i in range(n):
        ts = t0 + i * 2000
        futs.append(outbox.put(TelemetryBatch(readings=[Reading(metric="load", value=float(i % 100), ts=ts)]), ts=ts))
        futs.append(outbox.put(DeviceEvent(code="door.cycle", details={"n": i}), ts=ts))
    await asyncio.gather(*futs)
    await outbox.close()
    return 2 * n


def backlog(work: Path, broker: Mosquitto, api: httpx.Client, db_path: Path, hours: float = 2.0) -> dict[str, Any]:
    """A gateway back from ``hours`` offline: its outbox holds what it produced; from its start until the cloud
    has stored all of it. Also the agent's memory (its own process)."""
    device = "gw-backlog"
    api.post("/api/devices/bulk", json={"devices": [{"id": device, "site_id": "district", "kind": "gateway"}]})
    doc = agent_config(
        work / "gw", site="district", device=device, host=broker.host, port=broker.port, health={"interval_s": 3600}
    )
    (work / "gw").mkdir(parents=True, exist_ok=True)
    queued = asyncio.run(_fill(Path(doc["outbox"]["path"]), device, hours))
    agent = AgentProcess(write_config(work / "gw" / "agent.yaml", doc))
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    t0 = time.monotonic()
    agent.start()
    rss, stored = 0.0, 0
    try:
        proc = psutil.Process(agent.proc.pid) if agent.proc else None
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            stored = db.execute(
                "SELECT count(*) FROM messages WHERE device_id = ? AND (type = 'telemetry' OR "
                "(type = 'event' AND json_extract(body, '$.code') = 'door.cycle'))",
                (device,),
            ).fetchone()[0]
            if proc is not None:
                with contextlib.suppress(psutil.Error):
                    rss = max(rss, proc.memory_info().rss / 2**20)
            if stored >= queued:
                break
            time.sleep(0.1)
        drain_s = time.monotonic() - t0
    finally:
        agent.stop()
    return {
        "backlog_messages": queued,
        "backlog_stored": stored,
        "backlog_drain_s": round(drain_s, 1),
        "edge_rss_mb": round(rss, 1),
    }


def run(
    covers: int = 16_000,
    cells: int = 1191,
    period_h: float = 1.0,
    speed: float = 60.0,
    faults: int = 40,
    heartbeat_s: float = 900.0,
    backlog_h: float = 2.0,
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="ce-bench-fleet-"))
    district = generate(DistrictSpec(covers=covers, cells=cells, site="district"))
    with Mosquitto(workdir=work / "broker") as broker, (work / "cloud.log").open("wb") as cloud_log:
        port = free_port()
        env = {
            **os.environ,
            "CE_DATABASE_URL": f"sqlite:///{work / 'cloud.db'}",
            "CE_BROKER_URL": broker.url,
            "CE_RULES_FILE": str(ROOT / "cloud" / "rules" / "default.yaml"),
            "CE_COMMAND_KEY_FILE": str(work / "key.pem"),
            "CE_UPDATE_KEY_FILE": str(work / "update.pem"),
            "CE_MEDIA_DIR": str(work / "media"),
            "CE_PORT": str(port),
        }
        setup = subprocess.run(
            [
                sys.executable,
                "-m",
                "civicedge_cli",
                "cloud",
                "create-user",
                "bench",
                "--role",
                "operator",
                "--password-stdin",
            ],
            input=PASSWORD + "\n",
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        del setup
        cloud = subprocess.Popen(
            [sys.executable, "-m", "civicedge_cli", "cloud", "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=cloud_log,
        )
        proc = psutil.Process(cloud.pid)
        peak = [0.0]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(0.5):
                try:
                    peak[0] = max(peak[0], proc.memory_info().rss / 2**20)
                except psutil.Error:
                    return

        threading.Thread(target=sample, daemon=True).start()
        base = f"http://127.0.0.1:{port}"
        try:
            api = httpx.Client(base_url=base, timeout=120)
            deadline = time.monotonic() + 60
            while True:
                try:
                    if api.get("/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the cloud did not start: {(work / 'cloud.log').read_text()[-2000:]}")
                time.sleep(0.2)
            r = api.post("/auth/login", json={"username": "bench", "password": PASSWORD})
            api.headers["X-CSRF-Token"] = r.json()["csrf"]
            t0 = time.monotonic()
            register(district, api, progress=lambda m: print(f"  {m}", file=sys.stderr))
            register_s = time.monotonic() - t0
            live = Live(base, api.cookies)
            live.start()
            live.ready.wait(10)
            fleet = CoverFleet(
                district, broker.host, broker.port, speed=speed, heartbeat_s=heartbeat_s, fault_s=period_h * 3600
            )
            injected: dict[str, float] = {}
            real_s = period_h * 3600 / speed

            async def drive() -> None:
                stop = asyncio.Event()
                task = asyncio.create_task(fleet.run(stop))
                nodes = [c.node for c in district.covers]
                step = real_s / (faults + 1)
                for i in range(faults):
                    await asyncio.sleep(step)
                    node = nodes[(i * 7919) % len(nodes)]
                    if node not in injected:
                        injected[node] = time.monotonic()
                        await fleet.inject(node, ("tilt", "gas", "flood")[i % 3])
                await asyncio.sleep(step)
                stop.set()
                await task

            t1 = time.monotonic()
            asyncio.run(drive())
            # the cloud has everything when its stored count stops at what was sent
            db = sqlite3.connect(f"file:{work / 'cloud.db'}?mode=ro", uri=True, timeout=30)
            stored = 0
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                stored = db.execute("SELECT count(*) FROM messages WHERE site_id = 'district'").fetchone()[0]
                if stored >= fleet.sent:
                    break
                time.sleep(0.5)
            drained_s = time.monotonic() - t1
            dupes = db.execute("SELECT count(*) - count(DISTINCT msg_id) FROM messages").fetchone()[0]
            latencies = [(live.raised[n] - t) * 1000 for n, t in injected.items() if n in live.raised]
            live.stop.set()
            gw = backlog(work, broker, api, work / "cloud.db", hours=backlog_h)
        finally:
            sampling.set()
            cloud.terminate()
            cloud.wait(30)
    return {
        "bench": "fleet",
        "devices": covers,
        "district_hours": period_h,
        "speed": speed,
        "register_s": round(register_s, 1),
        "sent": fleet.sent,
        "stored": stored,
        "msgs_per_s": round(stored / drained_s, 1),
        "alarm_to_console_ms_p50": percentile(latencies, 50, 1) if latencies else None,
        "alarm_to_console_ms_p99": percentile(latencies, 99, 1) if latencies else None,
        "alarms_seen": f"{len(latencies)}/{len(injected)}",
        "lost": max(0, fleet.sent - stored),
        "duplicates_stored": dupes,
        "cloud_rss_mb": round(peak[0], 1),
        "edge_rss_mb": gw["edge_rss_mb"],
        "backlog_drain_s": gw["backlog_drain_s"],
        "backlog_messages": gw["backlog_messages"],
        "backlog_lost": gw["backlog_messages"] - gw["backlog_stored"],
        "mean_alarm_ms": round(statistics.fmean(latencies), 1) if latencies else None,
        "targets": {"alarm_to_console_ms_p99": 1000, "lost": 0, "cloud_rss_mb": 500},
    }
