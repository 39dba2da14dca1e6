"""The cloud scaled out, as an operator runs it: two API nodes (``civicedge cloud run``) and two standalone
ingestion workers (``civicedge cloud ingest``), each its own process, on one PostgreSQL database and a real
Mosquitto, every one of them with the same rule set.

- a device's tilt readings split between the two workers raise exactly one alarm, honouring hysteresis and
  duration, and clear it once;
- an alarm stored by a worker reaches a console (Server-Sent Events, as a browser reads them) on an API node;
- an absence alarm fires once, not once per process;
- the leader killed with SIGKILL, another process takes over and its timers run;
- a device revoked through one API node is refused by the workers at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import httpx
import orjson
import psycopg
import pytest

from cloud.commands import load_or_create_key
from protocol import encode, envelope, topic
from protocol.messages import AlarmRaise, ManholeReading
from simulators.services import Mosquitto, free_port
from tests.conftest import PG_ADMIN_URL
from tests.waits import until

TOKEN = "scale-out-admin-token-000000001"
RULES = """
rules:
  - id: cover-tilt
    match: {kinds: [manhole]}
    when: {type: threshold, metric: tilt_deg, above: 5, clear_at: 4, for_s: 2}
    actions: [{alarm: {severity: major, code: cover_tilt, message: "cover tilted"}}]
  - id: gateway-silent
    match: {kinds: [gateway]}
    when: {type: absence, after_s: 3, message_type: health}
    actions: [{alarm: {severity: major, code: gateway_silent}}]
"""


@dataclass
class Proc:
    name: str
    url: str  # the API (nodes) or /healthz and /metrics (workers)
    popen: subprocess.Popen[bytes]
    log: Path

    def health(self) -> dict[str, Any]:
        try:
            return dict(httpx.get(f"{self.url}/healthz", timeout=2).json())
        except (httpx.HTTPError, ValueError):
            return {}

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=5, headers={"Authorization": f"Bearer {TOKEN}"}).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class Cluster:
    broker: Mosquitto
    db_url: str
    nodes: list[Proc] = field(default_factory=list)
    workers: list[Proc] = field(default_factory=list)

    @property
    def procs(self) -> list[Proc]:
        return self.nodes + self.workers

    def api(self, node: Proc, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(
            method, f"{node.url}{path}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10, **kw
        )

    def alarms(self, code: str, state: str = "open") -> list[dict[str, Any]]:
        node = next(n for n in self.nodes if n.alive)
        items = self.api(node, "GET", "/api/alarms", params={"limit": 1000, "state": state}).json()["items"]
        return [x for x in items if x["code"] == code]

    def leaders(self) -> list[Proc]:
        return [p for p in self.procs if p.alive and p.health().get("leader") is True]


def _spawn(name: str, args: list[str], env: dict[str, str], tmp: Path, url: str) -> Proc:
    log = tmp / f"{name}.log"
    out = log.open("wb")
    popen = subprocess.Popen(
        [sys.executable, "-m", "civicedge_cli", "cloud", *args], env=env, cwd=tmp, stdout=out, stderr=out
    )
    return Proc(name, url, popen, log)


@pytest.fixture
def cluster(mosquitto: Mosquitto, tmp_path: Path) -> Iterator[Cluster]:
    name = f"ce_scale_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    db_url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    keys = tmp_path / "keys"
    load_or_create_key(keys / "command-key.pem")  # the nodes share their keys (provisioned before they start)
    load_or_create_key(keys / "update-key.pem")
    (tmp_path / "rules.yaml").write_text(RULES)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CE_DATABASE_URL": db_url,
        "CE_BROKER_URL": f"mqtt://{mosquitto.host}:{mosquitto.port}",
        "CE_INGEST_SHARE_GROUP": "ingest",  # every process that ingests joins one group
        "CE_RULES_FILE": str(tmp_path / "rules.yaml"),
        "CE_API_TOKENS": f"admin:{TOKEN}",
        "CE_COMMAND_KEY_FILE": str(keys / "command-key.pem"),
        "CE_UPDATE_KEY_FILE": str(keys / "update-key.pem"),
        "CE_MEDIA_DIR": str(tmp_path / "media"),
        "CE_INGEST_BATCH_MS": "20",
    }
    c = Cluster(mosquitto, db_url)
    try:
        for i in (1, 2):
            port = free_port()
            c.nodes.append(
                _spawn(
                    f"node{i}",
                    ["run", "--port", str(port), "--workers", "0"],
                    env,
                    tmp_path,
                    f"http://127.0.0.1:{port}",
                )
            )
            if i == 1:  # the first node migrates and creates the remaining keys; the others find them
                wait_healthy(c.nodes[0])
        for i in (1, 2):
            port = free_port()
            c.workers.append(
                _spawn(
                    f"worker{i}",
                    ["ingest", "--worker-id", f"w{i}", "--health-port", str(port)],
                    env,
                    tmp_path,
                    f"http://127.0.0.1:{port}",
                )
            )
        for p in c.procs:
            wait_healthy(p)
        yield c
    finally:
        for p in c.procs:
            if p.alive:
                p.popen.terminate()
        for p in c.procs:
            try:
                p.popen.wait(20)
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait(5)
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def wait_healthy(p: Proc, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not p.alive:
            raise AssertionError(f"{p.name} exited: {p.log.read_text()[-2000:]}")
        h = p.health()
        if (
            h.get("status") == "ok"
            and h.get("live_bridge") == "listening"
            and h.get("ingest_workers_connected", 0) == (h.get("ingest_workers", 0))
        ):
            return
        time.sleep(0.1)
    raise AssertionError(f"{p.name} not healthy: {p.log.read_text()[-2000:]}")


async def console_events(node: Proc, username: str, password: str, into: list[dict[str, Any]]) -> None:
    """A console on ``node`` as a browser has it: signed in, reading ``/console/live``."""
    async with httpx.AsyncClient(base_url=node.url, timeout=None) as client:
        r = await client.post("/auth/login", json={"username": username, "password": password})
        assert r.status_code == 200, r.text
        async with client.stream("GET", "/console/live") as stream:
            kind = ""
            into.append({"at": time.monotonic(), "kind": "connected"})
            async for line in stream.aiter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    into.append({"at": time.monotonic(), "kind": kind, **orjson.loads(line[6:])})


async def test_several_processes_share_rules_live_push_timers_and_revocations(cluster: Cluster) -> None:
    a, b = cluster.nodes
    register = [
        ("POST", "/api/sites", {"id": "riverside", "name": "Riverside"}),
        ("POST", "/api/devices", {"id": "mh-001", "site_id": "riverside", "kind": "manhole"}),
        ("POST", "/api/devices", {"id": "mh-002", "site_id": "riverside", "kind": "manhole"}),
        ("POST", "/api/devices", {"id": "gate-01", "site_id": "riverside", "kind": "gate"}),
        ("POST", "/api/users", {"username": "ops-1", "password": "operator pass 1", "role": "operator"}),
    ]
    for method, path, body in register:
        r = cluster.api(a, method, path, json=body)
        assert r.status_code == 201, r.text
    seen: list[dict[str, Any]] = []
    console = asyncio.create_task(console_events(b, "ops-1", "operator pass 1", seen))
    broker = cluster.broker
    try:
        await until(lambda: seen, 20, "the console connected")
        t0 = time.time_ns() // 1_000_000
        # ---- one cover's tilt, split between the workers: one alarm, with duration and hysteresis ----
        tilt = [(0, 6.0), (500, 7.0), (1000, 6.5), (1500, 8.0), (2000, 6.0), (2500, 4.5), (3000, 6.0), (3500, 4.2)]
        short = [(0, 6.0), (1000, 6.0), (1500, 3.0)]  # 1.5 s over the limit: shorter than the rule's 2 s
        tele = topic("riverside", "mh-001", "tele")

        def evaluated() -> float:  # readings and messages the workers' rules have taken (under the device's lock)
            return sum(w.metric("ce_rules_observations_total") for w in cluster.workers)

        seq = 0
        async with aiomqtt.Client(broker.host, broker.port) as c:
            # a cover reports one reading at a time, as a device does: the next leaves once the last was taken in
            for dev, series in (("mh-001", tilt), ("mh-002", short)):
                for i, (dt, v) in enumerate(series):
                    before = evaluated()
                    m = envelope(ManholeReading(tilt_deg=v, battery_v=3.6), dev=dev, seq=i + 1, ts=t0 + dt)
                    await c.publish(topic("riverside", dev, "tele"), encode(m), qos=1)
                    await until(lambda b=before: evaluated() > b, 20, f"{dev} reading {i} evaluated", thread=True)
        seq = len(tilt)
        split = [w.metric("ce_ingest_stored_total") for w in cluster.workers]
        assert all(n > 0 for n in split), f"the broker gave every message to one worker: {split}"
        tilted = await until(lambda: cluster.alarms(code="cover_tilt"), 20, "the tilt alarm", thread=True)
        assert [(x["device_id"], x["state"], x["occurrences"]) for x in tilted] == [("mh-001", "active", 1)]
        async with aiomqtt.Client(broker.host, broker.port) as c:  # below clear_at: cleared
            m = envelope(ManholeReading(tilt_deg=3.0, battery_v=3.6), dev="mh-001", seq=seq + 1, ts=t0 + 4000)
            await c.publish(tele, encode(m), qos=1)
        await until(lambda: cluster.alarms(code="cover_tilt", state="cleared"), 20, "the tilt cleared", thread=True)
        assert [x["device_id"] for x in cluster.alarms(code="cover_tilt")] == []  # none open, none for mh-002
        assert [x["device_id"] for x in cluster.alarms(code="cover_tilt", state="cleared")] == ["mh-001"]

        # ---- an alarm a worker stores reaches the console on an API node ----
        sent = time.monotonic()
        async with aiomqtt.Client(broker.host, broker.port) as c:
            body = AlarmRaise(key="door:1", code="door_held", severity="major", message="door held open")
            await c.publish(topic("riverside", "gate-01", "alm"), encode(envelope(body, dev="gate-01", seq=1)), qos=1)
        door = await until(
            lambda: next((e for e in seen if e["kind"] == "alarm" and e.get("code") == "door_held"), None),
            10,
            "the console",
        )
        assert door["device_id"] == "gate-01" and door["event"] == "raised"
        assert door["at"] - sent < 5  # (the fleet benchmark measures it: well under a second)
        rule_alarms = [e for e in seen if e["kind"] == "alarm" and e.get("id") == tilted[0]["id"]]
        assert [e["event"] for e in rule_alarms] == ["raised", "cleared"]  # rules' alarms too, each once

        # ---- absence: once, whoever runs the timer ----
        (leader,) = cluster.leaders()
        assert leader in cluster.nodes  # a standalone worker runs no rollouts and sends no commands: it never leads
        assert (
            cluster.api(
                a, "POST", "/api/devices", json={"id": "gw-01", "site_id": "riverside", "kind": "gateway"}
            ).status_code
            == 201
        )
        silent = await until(lambda: cluster.alarms(code="gateway_silent"), 30, "the absence alarm", thread=True)
        await asyncio.sleep(3)  # (three more absence periods: another process's timer would have fired by now)
        silent = cluster.alarms(code="gateway_silent")
        assert [(x["device_id"], x["occurrences"]) for x in silent] == [("gw-01", 1)]
        history = cluster.api(a, "GET", f"/api/alarms/{silent[0]['id']}/history").json()
        assert [h["action"] for h in history] == ["raised"]

        # ---- the leader dies: another process takes over, and its timers run ----
        leader.popen.send_signal(signal.SIGKILL)
        leader.popen.wait(10)
        killed = time.monotonic()
        (successor,) = await until(cluster.leaders, 20, "a new leader", thread=True)
        assert successor is not leader
        takeover_s = time.monotonic() - killed
        assert takeover_s < 10, takeover_s
        node = next(n for n in cluster.nodes if n.alive)
        assert (
            cluster.api(
                node, "POST", "/api/devices", json={"id": "gw-02", "site_id": "riverside", "kind": "gateway"}
            ).status_code
            == 201
        )
        await until(
            lambda: any(x["device_id"] == "gw-02" for x in cluster.alarms(code="gateway_silent")),
            30,
            "the absence alarm after the takeover",
            thread=True,
        )

        # ---- a device revoked through an API node is refused by every worker at once ----
        assert cluster.api(node, "POST", "/api/devices/gate-01/revoke").status_code == 200
        revoked = time.monotonic()
        async with aiomqtt.Client(broker.host, broker.port) as c:
            for i in range(6):  # enough to reach every worker still alive
                body = AlarmRaise(key=f"door:{i + 2}", code="door_held", severity="major", message="door held open")
                await c.publish(
                    topic("riverside", "gate-01", "alm"), encode(envelope(body, dev="gate-01", seq=i + 2)), qos=1
                )
        dead = await until(
            lambda: [
                d
                for d in cluster.api(node, "GET", "/api/dead-letters", params={"limit": 50}).json()["items"]
                if d["reason"] == "revoked_device"
            ],
            20,
            "the revoked device refused",
            thread=True,
        )
        assert dead and time.monotonic() - revoked < 20
        assert [x["key"] for x in cluster.alarms(code="door_held")] == ["door:1"]  # none of the revoked one's
    finally:
        console.cancel()
        for p in cluster.procs:
            if not p.alive and p.popen.returncode not in (-signal.SIGKILL,):
                print(p.name, p.log.read_text()[-3000:])
