"""``civicedge bench fleet``: the district against the cloud for a fixed district period.

The cloud runs as its own process (``civicedge cloud run``, SQLite, the default rules) so its memory is its
own; with ``--nodes``/``--workers`` also as several processes (API nodes and standalone ingestion workers) on
PostgreSQL, beside one process on PostgreSQL in the same run; a real Mosquitto; the district registered through
the real paths; every node's heartbeats at the chosen speed, and faults injected on a schedule. Reported:

* ``msgs_per_s``: device messages stored per second;
* ``alarm_to_console_ms_p50/p99``: from a fault's injection to its alarm arriving on the console's live
  channel (SSE, logged in as an operator);
* ``lost``: messages the nodes published that the cloud did not store; ``duplicates_stored``: messages
  stored more than once (the same device and sequence number twice);
* ``cloud_rss_mb``: the largest cloud process's peak resident memory (``…_all_processes``: their sum).
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
from sqlalchemy import Engine

from bench.databases import pg_admin
from bench.profile import Sampler
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


CLI = (sys.executable, "-m", "civicedge_cli", "cloud")


class Cloud:
    """The cloud under test: ``nodes`` API processes (``cloud run``) and ``workers`` standalone ingestion workers
    (``cloud ingest``), on SQLite (one process) or a fresh PostgreSQL database (dropped afterwards)."""

    def __init__(self, work: Path, broker: Mosquitto, nodes: int, workers: int, db: str) -> None:
        self.work, self.nodes, self.workers = work, nodes, workers
        self.pg_name: str | None = None
        if db == "postgresql":
            import psycopg

            self.admin = pg_admin()
            self.pg_name = f"ce_bench_fleet_{os.getpid()}_{int(time.time())}"
            with psycopg.connect(self.admin, autocommit=True, connect_timeout=5) as conn:
                conn.execute(f'CREATE DATABASE "{self.pg_name}"')
            self.db_url = f"{self.admin.rsplit('/', 1)[0]}/{self.pg_name}"
        else:
            self.db_url = f"sqlite:///{work / 'cloud.db'}"
        self.port = free_port()
        self.env = {
            **os.environ,
            "CE_DATABASE_URL": self.db_url,
            "CE_BROKER_URL": broker.url,
            "CE_RULES_FILE": str(ROOT / "cloud" / "rules" / "default.yaml"),
            "CE_COMMAND_KEY_FILE": str(work / "key.pem"),
            "CE_UPDATE_KEY_FILE": str(work / "update.pem"),
            "CE_MEDIA_DIR": str(work / "media"),
        }
        if nodes > 1 or workers:  # every process that ingests joins one shared-subscription group
            self.env["CE_INGEST_SHARE_GROUP"] = "ingest"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.urls: list[str] = []  # the API nodes
        self.peak: dict[int, float] = {}
        self._sampling = threading.Event()
        self.engine: Engine | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        log = (self.work / f"{name}.log").open("wb")
        p = subprocess.Popen([*CLI, *args], env=self.env, stdout=subprocess.DEVNULL, stderr=log)
        self.procs.append(p)
        return p

    def _healthy(self, url: str, name: str) -> None:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or any(p.poll() is not None for p in self.procs):
                raise RuntimeError(f"{name} did not start: {(self.work / f'{name}.log').read_text()[-2000:]}")
            time.sleep(0.2)

    def start(self) -> None:
        setup = subprocess.run(
            [*CLI, "create-user", "bench", "--role", "operator", "--password-stdin"],
            input=PASSWORD + "\n",
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        if setup.returncode != 0:
            raise RuntimeError(f"create-user failed: {setup.stderr[-2000:]}")
        per_node = "0" if self.workers else "1"
        for i in range(self.nodes):
            port = self.port if i == 0 else free_port()
            self._spawn(["run", "--port", str(port), "--workers", per_node], f"node{i}")
            self.urls.append(f"http://127.0.0.1:{port}")
            self._healthy(self.urls[-1], f"node{i}")  # the first migrates and makes the keys
        for i in range(self.workers):
            port = free_port()
            self._spawn(["ingest", "--worker-id", f"bench-{i}", "--health-port", str(port)], f"worker{i}")
            self._healthy(f"http://127.0.0.1:{port}", f"worker{i}")
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        procs = [psutil.Process(p.pid) for p in self.procs]
        while not self._sampling.wait(0.5):
            for p in procs:
                with contextlib.suppress(psutil.Error):
                    self.peak[p.pid] = max(self.peak.get(p.pid, 0.0), p.memory_info().rss / 2**20)

    def query(self, sql: str) -> int:
        from sqlalchemy import text

        from cloud.db.engine import make_engine

        if self.engine is None:
            self.engine = make_engine(self.db_url)
        with self.engine.connect() as conn:
            return int(conn.execute(text(sql)).scalar_one())

    def stop(self) -> None:
        self._sampling.set()
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.engine is not None:
            self.engine.dispose()
        if self.pg_name is not None:
            import psycopg

            with psycopg.connect(self.admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)')


def cpu_seconds(cloud: Cloud, broker: Mosquitto) -> dict[str, float]:
    """CPU seconds so far of the cloud's processes, the broker, and this process (the district's nodes)."""

    def used(pid: int | None) -> float:
        try:
            t = psutil.Process(pid).cpu_times()
        except (psutil.Error, ValueError):
            return 0.0
        return float(t.user + t.system)

    return {
        "cloud": sum(used(p.pid) for p in cloud.procs),
        "broker": used(broker.proc.pid if broker.proc else None),
        "district_nodes": used(os.getpid()),
    }


#: offered_share: what the nodes' simulator sent over what the district's rate asks (it shares the cores with the
#: cloud and the broker): a run that sent much less did not put the cloud under the load it is named for
TARGETS = {"alarm_to_console_ms_p99": 1000, "lost": 0, "cloud_rss_mb": 500, "offered_share": 0.9}


def held(report: dict[str, Any]) -> bool:
    """The cloud kept up: nothing lost, and alarms on the console within the target (p99)."""
    p99 = report.get("alarm_to_console_ms_p99")
    return report.get("lost") == 0 and p99 is not None and p99 <= TARGETS["alarm_to_console_ms_p99"]


def find_capacity(
    district: Any, db: str, rate: float, first: dict[str, Any], speed: float, heartbeat_s: float, steps: int = 3
) -> dict[str, Any]:
    """The highest rate multiple the cloud holds (:func:`held`), by shorter runs (a quarter district hour, 80
    faults) stepping up by a quarter from ``rate`` while it holds, or down by a fifth until it does."""
    offered = len(district.covers) * speed / heartbeat_s  # messages per second at 1x
    passed = held(first)
    if first["sent_msgs_per_s"] < 0.9 * rate * offered:
        # the simulator could not offer even this rate: what the cloud held is a floor, and going up is pointless
        return {
            "capacity_rate": None,
            "capacity_msgs_per_s": round(first["sent_msgs_per_s"], 1) if passed else 0.0,
            "capacity_limited_by": "simulator",
            "capacity_steps": {str(rate): "not offered"},
        }
    best, best_sent = (rate, first["sent_msgs_per_s"]) if passed else (None, 0.0)
    tried: dict[float, str] = {rate: "held" if passed else "missed"}
    limited_by = "cloud"
    up, r = passed, rate
    for _ in range(steps):
        r = round(r * (1.25 if up else 0.8), 2)
        args = dict(period_h=0.25, speed=speed, faults=80, heartbeat_s=heartbeat_s / r)
        print(f"  capacity: trying {r}x", file=sys.stderr)
        report = one(district, 1, 0, db, backlog_h=0, **args)  # type: ignore[arg-type]
        if report["sent_msgs_per_s"] < 0.9 * r * offered:
            # the nodes' simulator (sharing the cores) could not offer this rate: it, not the cloud, is the limit
            tried[r], limited_by = "not offered", "simulator"
            break
        ok = held(report)
        tried[r] = "held" if ok else "missed"
        if ok:
            best, best_sent = r, report["sent_msgs_per_s"]
        if ok != up:
            break  # the verdict turned: the step before (going up) or this one (going down) is the capacity
    return {
        "capacity_rate": best,
        # what the district actually offered at that rate (and the cloud stored with nothing lost, p99 ≤ 1 s)
        "capacity_msgs_per_s": round(best_sent, 1),
        "capacity_limited_by": limited_by,
        "capacity_steps": {str(k): v for k, v in sorted(tried.items())},
    }


def run(
    covers: int = 16_000,
    cells: int = 1191,
    period_h: float = 1.0,
    speed: float = 60.0,
    faults: int = 40,
    heartbeat_s: float = 900.0,
    backlog_h: float = 2.0,
    nodes: int = 1,
    workers: int = 0,
    db: str = "sqlite",
    rate: float = 1.0,
    profile: bool = False,
    capacity: bool = False,
) -> dict[str, Any]:
    """The district against one cloud process; with ``nodes``/``workers`` beyond one process, the same district
    against that cloud too, on PostgreSQL, side by side with one process on PostgreSQL, in the same run."""
    district = generate(DistrictSpec(covers=covers, cells=cells, site="district"))
    # ``rate``: every node reports that many times as often (the district's message rate, multiplied)
    args = dict(period_h=period_h, speed=speed, faults=faults, heartbeat_s=heartbeat_s / rate)
    if nodes <= 1 and workers == 0:
        report = one(district, 1, 0, db, backlog_h=backlog_h, profile=profile, **args)  # type: ignore[arg-type]
        out = {"bench": "fleet", "rate": rate, **report}
        if capacity:
            out |= find_capacity(district, db, rate, report, speed, heartbeat_s)
        return out
    single = one(district, 1, 0, "postgresql", backlog_h=0, **args)  # type: ignore[arg-type]
    several = one(district, nodes, workers, "postgresql", backlog_h=0, **args)  # type: ignore[arg-type]
    return {
        "bench": "fleet",
        "rate": rate,
        # judged on the scaled-out cloud (the one-process run beside it is the yardstick)
        "alarm_to_console_ms_p99": several["alarm_to_console_ms_p99"],
        "lost": several["lost"],
        "one_process": single,
        "scaled_out": several,
        "msgs_per_s_ratio": round(several["msgs_per_s"] / single["msgs_per_s"], 2) if single["msgs_per_s"] else None,
        "offered_share": several["offered_share"],
        "targets": {
            "alarm_to_console_ms_p99": TARGETS["alarm_to_console_ms_p99"],
            "lost": 0,
            "offered_share": TARGETS["offered_share"],
        },
    }


def one(
    district: Any,
    nodes: int,
    workers: int,
    db: str,
    period_h: float,
    speed: float,
    faults: int,
    heartbeat_s: float,
    backlog_h: float,
    profile: bool = False,
) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="ce-bench-fleet-"))
    print(f"  cloud: {nodes} node(s), {workers} standalone worker(s), {db}", file=sys.stderr)
    with Mosquitto(workdir=work / "broker") as broker:
        cloud = Cloud(work, broker, nodes, workers, db)
        try:
            cloud.start()
            base = cloud.base
            api = httpx.Client(base_url=base, timeout=120)
            r = api.post("/auth/login", json={"username": "bench", "password": PASSWORD})
            api.headers["X-CSRF-Token"] = r.json()["csrf"]
            t0 = time.monotonic()
            register(district, api, progress=lambda m: print(f"  {m}", file=sys.stderr))
            register_s = time.monotonic() - t0
            # the console on the last API node: with several, an alarm crosses processes to reach it
            live = Live(cloud.urls[-1], api.cookies)
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
                nodes_ = [c.node for c in district.covers]
                step = real_s / (faults + 1)
                for i in range(faults):
                    await asyncio.sleep(step)
                    node = nodes_[(i * 7919) % len(nodes_)]
                    if node not in injected:
                        injected[node] = time.monotonic()
                        await fleet.inject(node, ("tilt", "gas", "flood")[i % 3])
                await asyncio.sleep(step)
                stop.set()
                await task

            t1 = time.monotonic()
            # where the (first) cloud process's time goes while the district runs: sampled from outside
            sampler = Sampler(cloud.procs[0].pid, max(5.0, real_s - 2), work / "profile.txt") if profile else None
            cpu0 = cpu_seconds(cloud, broker)
            asyncio.run(drive())
            drive_s = time.monotonic() - t1
            cpu = {k: round((v - cpu0[k]) / drive_s, 2) for k, v in cpu_seconds(cloud, broker).items()}
            profiled = sampler.result() if sampler is not None else None
            # the cloud has everything when its stored count stops at what was sent
            stored = 0
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                stored = cloud.query("SELECT count(*) FROM messages WHERE site_id = 'district'")
                if stored >= fleet.sent:
                    break
                time.sleep(0.5)
            drained_s = time.monotonic() - t1
            # a message stored twice would carry its device's sequence number twice
            dupes = cloud.query(
                "SELECT count(*) - (SELECT count(*) FROM (SELECT DISTINCT device_id, seq FROM messages "
                "WHERE site_id = 'district') AS d) FROM messages WHERE site_id = 'district'"
            )
            latencies = [(live.raised[n] - t) * 1000 for n, t in injected.items() if n in live.raised]
            live.stop.set()
            gw = backlog(work, broker, api, work / "cloud.db", hours=backlog_h) if backlog_h and db == "sqlite" else {}
        finally:
            cloud.stop()
    out = {
        "nodes": nodes,
        "workers": workers,
        "db": db,
        "devices": len(district.covers),
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
        "cloud_rss_mb": round(max(cloud.peak.values(), default=0.0), 1),
        "cloud_rss_mb_all_processes": round(sum(cloud.peak.values()), 1),
        "mean_alarm_ms": round(statistics.fmean(latencies), 1) if latencies else None,
        "offered_msgs_per_s": round(len(district.covers) * speed / heartbeat_s, 1),
        # what the nodes' simulator managed to send while the district ran (it shares the cores too)
        "sent_msgs_per_s": round(fleet.sent / drive_s, 1),
        "offered_share": round(fleet.sent / drive_s / (len(district.covers) * speed / heartbeat_s), 3),
        # cores each part kept busy while the district ran (this machine has two, shared by all three)
        "cpu_cores": cpu,
        "targets": TARGETS,
    }
    if profiled is not None:
        out["profile"] = profiled
    if gw:
        out |= {
            "edge_rss_mb": gw["edge_rss_mb"],
            "backlog_drain_s": gw["backlog_drain_s"],
            "backlog_messages": gw["backlog_messages"],
            "backlog_lost": gw["backlog_messages"] - gw["backlog_stored"],
        }
    return out
