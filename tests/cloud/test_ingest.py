"""Ingestion against a real Mosquitto, on SQLite and PostgreSQL: end to end, dedup, dead letters, faults."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import orjson
import pytest
from sqlalchemy import func, select

from cloud.db import schema as t
from cloud.service import CloudService
from edge.agent import Agent
from protocol import encode, envelope, topic
from protocol.examples import example
from protocol.limits import MAX_PAYLOAD_BYTES
from protocol.messages import AlarmClear, AlarmRaise, DeviceEvent, Reading, TelemetryBatch
from simulators.services import Mosquitto
from tests.cloud.conftest import MakeCloud, register
from tests.conftest import RunAgent
from tests.waits import until as _until


def count(svc: CloudService, table: t.Table, *where: object) -> int:
    with svc.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())  # type: ignore[arg-type]


async def until(cond: Callable[[], bool], timeout: float = 20) -> None:
    """Wait for a condition on stored state (the store is polled; nothing else signals it)."""
    await _until(cond, timeout, "a condition on stored state", thread=True)


async def publish(broker: Mosquitto, items: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client(broker.host, broker.port) as c:
        for top, payload in items:
            await c.publish(top, payload, qos=1)


async def test_end_to_end_agent_to_rest(make_cloud: MakeCloud, run_agent: RunAgent) -> None:
    svc, api = make_cloud()
    register(api, "riverside", "gate-01")
    agent: Agent = await run_agent(health={"interval_s": 3600})
    for i in range(25):
        await agent.outbox.put_reading("water_level_cm", 10.0 + i, ts=1_795_000_000_000 + i * 1000)
    await agent.outbox.put(AlarmRaise(key="flood:a", code="flood", severity="critical", message="water"))
    await agent.outbox.put(DeviceEvent(code="door.opened"))
    await until(lambda: count(svc, t.telemetry, t.telemetry.c.metric == "water_level_cm") == 25)
    await until(lambda: api.get("/api/devices/gate-01").json()["status"] == "online")
    dev = api.get("/api/devices/gate-01").json()
    assert dev["agent_version"] and dev["last_seen_ms"] and dev["health"]["outbox_depth"] is not None
    q = api.get(
        "/api/devices/gate-01/telemetry",
        params={"metric": "water_level_cm", "since": 1_795_000_000_000, "until": 1_795_000_100_000},
    )
    assert [p["value"] for p in q.json()["points"]] == [10.0 + i for i in range(25)]
    ds = api.get(
        "/api/devices/gate-01/telemetry",
        params={"metric": "water_level_cm", "since": 1_795_000_000_000, "until": 1_795_000_100_000, "bucket_s": 10},
    ).json()
    assert [p["count"] for p in ds["points"]] == [10, 10, 5] and ds["points"][0]["avg"] == 14.5
    await until(lambda: api.get("/api/alarms", params={"state": "active"}).json()["total"] == 1)
    await agent.outbox.put(AlarmClear(key="flood:a", code="flood"))
    await until(lambda: api.get("/api/alarms", params={"state": "cleared"}).json()["total"] == 1)
    ev = api.get("/api/events", params={"device": "gate-01", "type": "event", "limit": 1}).json()
    assert ev["total"] >= 2 and len(ev["items"]) == 1 and ev["next_offset"] == 1


async def test_duplicate_delivery_stored_once(make_cloud: MakeCloud, mosquitto: Mosquitto) -> None:
    svc, api = make_cloud()
    register(api, "riverside", "gate-01")
    batch = TelemetryBatch(readings=[Reading(metric="t", value=float(i), ts=1000 + i) for i in range(10)])
    env = envelope(batch, dev="gate-01", seq=1)
    top = topic("riverside", "gate-01", "tele")
    await publish(mosquitto, [(top, encode(env))] * 3)
    await until(lambda: svc.metrics.get("ce_ingest_messages_total") >= 3)
    assert count(svc, t.messages, t.messages.c.msg_id == env.id) == 1
    assert count(svc, t.telemetry, t.telemetry.c.msg_id == env.id) == 10
    assert svc.metrics.get("ce_ingest_duplicates_total") == 2


async def test_every_dead_letter_reason(make_cloud: MakeCloud, mosquitto: Mosquitto) -> None:
    svc, api = make_cloud()
    register(api, "riverside", "gate-01")
    register(api, "hillside", "gate-99")
    assert api.post("/api/sites/riverside/residents", json={"id": "res-1042", "unit": "1203"}).status_code == 201
    _, good = example("gate.decision")  # a decision for res-1042
    ok = orjson.loads(encode(good))

    def mutate(**kw: object) -> bytes:
        return orjson.dumps({**ok, **kw})

    evt = topic("riverside", "gate-01", "evt")
    cases = {
        "malformed_json": (evt, encode(good)[:-9]),
        "schema": (evt, mutate(seq="1")),
        "too_large": (evt, mutate(pad="x" * MAX_PAYLOAD_BYTES)),
        "unknown_type": (evt, mutate(type="gate.levitate")),
        "unsupported_version": (evt, mutate(v=9)),
        "bad_topic": ("ce/v1/riverside/GATE-01/evt", encode(good)),
        "wrong_channel": (topic("riverside", "gate-01", "tele"), encode(good)),
        "spoofed_device": (topic("riverside", "gate-02", "evt"), encode(good)),
        "unknown_device": (topic("riverside", "gate-77", "evt"), mutate(dev="gate-77")),
    }
    cross_site = (topic("riverside", "gate-99", "evt"), mutate(dev="gate-99"))  # registered in hillside
    await publish(mosquitto, [*cases.values(), cross_site, (evt, encode(good))])
    await until(lambda: count(svc, t.dead_letters) == len(cases) + 1)
    summary = api.get("/api/dead-letters/summary").json()
    assert summary == {**dict.fromkeys(cases, 1), "spoofed_device": 2}
    assert count(svc, t.messages, t.messages.c.type == "gate.decision") == 1  # the good one still stored
    page = api.get("/api/dead-letters", params={"reason": "spoofed_device"}).json()
    assert {i["topic"] for i in page["items"]} == {cases["spoofed_device"][0], cross_site[0]}
    metrics = api.get("/metrics").text
    assert 'ce_dead_letters_total{reason="too_large"} 1' in metrics


async def test_worker_killed_mid_batch_loses_nothing(
    db_url: str, mosquitto: Mosquitto, tmp_path: Path, make_cloud: MakeCloud
) -> None:
    svc, api = make_cloud(ingest_workers=0)  # the API only; the worker runs as its own process
    register(api, "riverside", "gate-01")
    env_vars = {
        "CE_DATABASE_URL": db_url,
        "CE_BROKER_URL": f"mqtt://{mosquitto.host}:{mosquitto.port}",
        "CE_INGEST_BATCH_ROWS": "50",
        "CE_INGEST_BATCH_MS": "20",
        "PATH": "/usr/bin:/bin",
    }
    cmd = [sys.executable, "-m", "civicedge_cli", "cloud", "ingest", "--worker-id", "w1"]
    first = subprocess.Popen(
        cmd, env={**env_vars, "CE_FAULT_EXIT_AFTER_BATCHES": "3"}, cwd=tmp_path, stderr=subprocess.PIPE
    )
    evts = [envelope(DeviceEvent(code="n", details={"i": i}), dev="gate-01", seq=i + 1) for i in range(400)]
    assert first.stderr is not None
    said = [await asyncio.to_thread(first.stderr.readline)]  # "connecting …", then "… subscribed …"
    while b"subscribed" not in said[-1] and said[-1] and len(said) < 5:
        said.append(await asyncio.to_thread(first.stderr.readline))
    assert b"connecting to the broker" in said[0] and b"subscribed" in said[-1], said
    await publish(mosquitto, [(topic("riverside", "gate-01", "evt"), encode(e)) for e in evts])
    assert await asyncio.to_thread(first.wait, 30) == 137
    stored_before = count(svc, t.messages)
    assert 0 < stored_before < 400
    second = subprocess.Popen(cmd, env=env_vars, cwd=tmp_path, stderr=subprocess.DEVNULL)
    try:
        await until(lambda: count(svc, t.messages) == 400, 60)
    finally:
        second.terminate()
        second.wait(30)
    assert count(svc, t.messages) == 400  # nothing lost, nothing stored twice


async def test_command_round_trip(make_cloud: MakeCloud, run_agent: RunAgent, tmp_path: Path) -> None:
    svc, api = make_cloud()
    register(api, "riverside", "gate-01")
    assert svc.commands is not None
    agent: Agent = await run_agent(**svc.device_keys())
    assert agent.uplink is not None
    await agent.uplink.connected.wait()
    r = api.post("/api/devices/gate-01/commands", json={"name": "ping"})
    assert r.status_code == 202, r.text
    cid = r.json()["cid"]
    await until(lambda: api.get(f"/api/commands/{cid}").json()["status"] == "ok")
    assert api.get(f"/api/commands/{cid}").json()["result"]["pong"] is True
    bad = api.post("/api/devices/gate-01/commands", json={"name": "teleport"})
    await until(lambda: api.get(f"/api/commands/{bad.json()['cid']}").json()["status"] == "error")
    assert api.post("/api/devices/nope/commands", json={"name": "ping"}).status_code == 404
    assert api.post("/api/devices/gate-01/commands", json={"name": "Bad Name"}).status_code == 422


def test_messages_published_before_the_worker_resubscribes_after_a_broker_restart_are_kept(
    make_cloud: MakeCloud, mosquitto: Mosquitto
) -> None:
    """The default single worker keeps a plain persistent subscription: the broker restores it from persistence
    and queues what devices publish before the worker is back (a shared subscription would drop those)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    svc, _client = make_cloud(auto_register=True)
    w = svc.workers[0]

    def publish(code: str) -> None:
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{code}")
        c.connect(mosquitto.host, mosquitto.port)
        c.loop_start()
        payload = encode(envelope(DeviceEvent(code=code), dev="gate-01", seq=1))
        c.publish(topic("riverside", "gate-01", "evt"), payload, qos=1).wait_for_publish(5)
        c.disconnect()
        c.loop_stop()

    def codes() -> list[str]:
        with svc.engine.connect() as conn:
            return [r.body["code"] for r in conn.execute(select(t.messages.c.body).where(t.messages.c.type == "event"))]

    publish("before")
    mosquitto.stop()
    deadline = time.monotonic() + 10
    while w.connected.is_set() and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(3)  # the worker's reconnect backoff grows while the broker is away
    mosquitto.start()
    publish("during")
    assert not w.connected.is_set(), "the worker must still be reconnecting for this test to mean anything"
    deadline = time.monotonic() + 20
    while "during" not in codes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert codes() == ["before", "during"]


def test_a_batch_is_logged_as_sent_whatever_its_text(db_url: str) -> None:
    """The bulk paths (PostgreSQL: one array statement for the log, COPY for readings) keep every body as the device
    sent it — text in any script, quotes, backslashes, markup — store a message id once however often it comes, and
    tell which messages were new."""
    from cloud.db.engine import make_engine, migrate
    from cloud.ingest.store import Inbound, Store

    engine = make_engine(db_url)
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(t.sites.insert().values(id="riverside", name="r", created_ms=0))
        conn.execute(
            t.devices.insert().values(
                id="gate-01", site_id="riverside", kind="gateway", name="g", status="unknown", created_ms=0
            )
        )
    text = "井盖 <script>alert(\"x\")</script> back\\slash 'quote' tab"
    event = envelope(
        DeviceEvent(code="door.note", message=text, details={"note": text, "n": 2**40}), dev="gate-01", seq=1
    )
    readings = [Reading(metric="t", value=-0.5 * i, ts=1000 + i, unit="°C") for i in range(300)]
    batch = envelope(TelemetryBatch(readings=readings), dev="gate-01", seq=2)
    items = [
        Inbound(topic("riverside", "gate-01", ch), encode(env), 5)
        for ch, env in (("evt", event), ("tele", batch), ("evt", event), ("tele", batch))
    ]
    store = Store(engine)
    first = store.write_batch(items)
    again = store.write_batch(items[:2])
    assert (first.stored, first.duplicates, first.readings) == (2, 2, 300)
    assert (again.stored, again.duplicates, again.readings) == (0, 2, 0)
    with engine.connect() as conn:
        body = conn.execute(select(t.messages.c.body).where(t.messages.c.msg_id == event.id)).scalar_one()
        rows = conn.execute(select(t.telemetry.c.value, t.telemetry.c.unit).order_by(t.telemetry.c.ts)).all()
    assert body["message"] == text and body["details"] == {"note": text, "n": 2**40}
    assert [(r.value, r.unit) for r in rows] == [(-0.5 * i, "°C") for i in range(300)]

    def last_seen() -> int:
        with engine.connect() as conn:
            return int(conn.execute(select(t.devices.c.last_seen_ms).where(t.devices.c.id == "gate-01")).scalar_one())

    assert last_seen() == 5
    for seq, received, expected in ((3, 4, 5), (4, 9, 9)):  # a message that arrived late does not move it back
        late = envelope(DeviceEvent(code="door.note"), dev="gate-01", seq=seq)
        store.write_batch([Inbound(topic("riverside", "gate-01", "evt"), encode(late), received)])
        assert last_seen() == expected
    engine.dispose()


def test_the_drivers_own_errors_are_told_apart_from_a_bad_message() -> None:
    """COPY runs on psycopg's own connection, so its errors arrive unwrapped: the database failing (timeout,
    disk full, shutdown, deadlock, connection lost) is retried with the batch kept; a value the database refuses
    is one message's fault (dead-lettered alone)."""
    import psycopg
    import psycopg.errors as pe

    from cloud.ingest.store import database_failure

    for failing in (pe.QueryCanceled, pe.DiskFull, pe.AdminShutdown, pe.DeadlockDetected, psycopg.OperationalError):
        assert database_failure(failing("x")), failing
    assert not database_failure(pe.NumericValueOutOfRange("x"))
    assert not database_failure(pe.InvalidTextRepresentation("x"))


async def test_a_session_from_before_the_lanes_does_not_bring_alarms_to_the_data_lane(
    make_cloud: MakeCloud, mosquitto: Mosquitto
) -> None:
    """A node upgraded in place keeps its broker session (same client id): the one filter it held for every
    channel is dropped on connect, so an alarm arrives on the alarm lane only (not also behind the readings)."""
    import os
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    old = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ingest-{os.uname().nodename}-0", clean_session=False)
    acked = threading.Event()
    old.on_subscribe = lambda *_a: acked.set()
    old.connect(mosquitto.host, mosquitto.port)
    old.loop_start()
    old.subscribe("ce/v1/+/+/+", qos=1)
    assert acked.wait(5), "the old session's subscription"
    old.disconnect()
    old.loop_stop()
    svc, api = make_cloud()
    register(api, "riverside", "gate-01")
    env = envelope(AlarmRaise(key="gas", code="gas", severity="critical", message="gas"), dev="gate-01", seq=1)
    await publish(mosquitto, [(topic("riverside", "gate-01", "alm"), encode(env))])
    await until(lambda: count(svc, t.messages, t.messages.c.msg_id == env.id) == 1)
    event = envelope(DeviceEvent(code="after"), dev="gate-01", seq=2)  # the data lane delivers in order after it
    await publish(mosquitto, [(topic("riverside", "gate-01", "evt"), encode(event))])
    await until(lambda: count(svc, t.messages, t.messages.c.msg_id == event.id) == 1)
    assert svc.metrics.get("ce_ingest_duplicates_total") == 0


def test_the_network_thread_waits_while_too_many_payload_bytes_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """Held validated, a waiting message costs several times its size: the queue is bounded by bytes as well as by
    count (QoS 0 messages, which the broker does not hold back, would otherwise fill the memory)."""
    import threading

    import paho.mqtt.client as mqtt

    from cloud.db.engine import make_engine
    from cloud.ingest import worker as w
    from cloud.ingest.store import Store

    monkeypatch.setattr(w, "QUEUE_BYTES_MAX", 1000)
    ingest = w.IngestWorker(Store(make_engine("sqlite://")), "127.0.0.1", 1, batch_ms=0)

    def message(i: int) -> mqtt.MQTTMessage:
        msg = mqtt.MQTTMessage(mid=i, topic=b"ce/v1/s1/d1/tele")
        msg.payload = b"x" * 600
        return msg

    ingest._on_message(ingest.client, None, message(1))  # alone it always goes through, whatever its size
    second = threading.Thread(target=ingest._on_message, args=(ingest.client, None, message(2)), daemon=True)
    second.start()
    second.join(0.5)
    assert second.is_alive() and ingest.q.qsize() == 1  # 1,200 bytes would wait: the network thread holds on
    batcher = threading.Thread(target=ingest._run, daemon=True)
    batcher.start()  # takes the first (its batch waits for the writer), which frees its bytes
    second.join(10)
    assert not second.is_alive()
    assert ingest._queued_bytes <= 600
    ingest._stopping.set()
    ingest.q.put(w._STOP)
