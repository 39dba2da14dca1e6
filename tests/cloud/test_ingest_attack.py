"""Ingestion under attack, on SQLite and PostgreSQL: what a device with valid credentials can send.

Every message is stored or dead-lettered with its reason, never retried for ever; an alarm sent after any of
them is stored; a device's message touches only what belongs to its own site.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import aiomqtt
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select, text

from cloud.alarms import tables as alarm_tables
from cloud.db import schema as t
from cloud.db.engine import make_engine, migrate
from cloud.gate import tables as g
from cloud.ingest.store import Inbound, Store, now_ms
from protocol import encode, envelope, topic
from protocol.envelope import new_id
from protocol.messages import (
    BODY_BY_TYPE,
    AlarmRaise,
    DeviceEvent,
    GateDecision,
    MediaSnapshot,
    Reading,
    TelemetryBatch,
)
from protocol.signing import generate_key, public_key_b64, signed
from protocol.topics import UPLINK, Channel
from simulators.hostile import hostile_corpus
from simulators.services import Mosquitto
from tests.cloud.conftest import MakeCloud, register
from tests.cloud.schema_strategies import from_schema
from tests.cloud.test_ingest import publish, until

SITE, DEV, OTHER_SITE, OTHER_DEV = "riverside", "gate-01", "hillside", "gate-99"
#: a gateway provisioned with its own signing key (DEV has none, like a board: what it sends goes unsigned)
GATE, GATE_KEY = "gate-03", generate_key()
JPEG = "/9j/" + base64.b64encode(b"\xe0" + bytes(range(200))).decode()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A migrated database with two sites, a gate at each, residents (one without consent) and a plate."""
    engine = make_engine(db_url)
    migrate(engine)
    now = now_ms()
    with engine.begin() as conn:
        conn.execute(insert(t.sites), [{"id": s, "name": s, "created_ms": now} for s in (SITE, OTHER_SITE)])
        conn.execute(
            insert(t.devices),
            [
                {"id": DEV, "site_id": SITE, "kind": "gate", "name": DEV, "status": "online", "created_ms": now},
                {
                    "id": OTHER_DEV,
                    "site_id": OTHER_SITE,
                    "kind": "gate",
                    "name": "x",
                    "status": "online",
                    "created_ms": now,
                },
            ],
        )
        conn.execute(
            insert(t.devices).values(
                id=GATE,
                site_id=SITE,
                kind="gate",
                name=GATE,
                status="online",
                created_ms=now,
                signing_key=public_key_b64(GATE_KEY),
            )
        )
        conn.execute(
            insert(g.residents),
            [
                {"id": "res-1", "site_id": SITE, "unit": "1203", "name": "A", "created_ms": now, "consent_ms": now},
                {"id": "res-2", "site_id": SITE, "unit": "1204", "name": "B", "created_ms": now, "consent_ms": None},
                {
                    "id": "res-9",
                    "site_id": OTHER_SITE,
                    "unit": "1203",
                    "name": "C",
                    "created_ms": now,
                    "consent_ms": now,
                },
            ],
        )
        conn.execute(
            insert(g.plates),
            [{"site_id": OTHER_SITE, "plate": "ZJA12345", "holder": "res-9", "kind": "resident", "created_ms": now}],
        )
    yield Store(engine)
    engine.dispose()


def inbound(body: Any, *, dev: str = DEV, site: str = SITE, channel: str | None = None) -> tuple[Inbound, str]:
    """As ``dev`` sends it (signed by its own key when it has one)."""
    env = signed(GATE_KEY if dev == GATE else None, envelope(body, dev=dev, seq=1))
    ch = channel or next(iter(sorted(c.value for c in body.CHANNELS)))
    return Inbound(topic(site, dev, ch), encode(env), now_ms()), env.id


def refuse_on_insert(store: Store, table: str, refusal: str, *, pg_when: str, sqlite_when: str) -> None:
    """A trigger that plays a database refusing what a device sent: rows of ``table`` matching the condition
    fail with ``refusal`` (SQLite: RAISE(ABORT); PostgreSQL: an exception from plpgsql)."""
    with store.engine.begin() as conn:
        if store.engine.dialect.name == "postgresql":
            conn.execute(
                text(
                    f"CREATE FUNCTION refuse_{table}() RETURNS trigger AS $$ BEGIN IF {pg_when} THEN "
                    f"RAISE EXCEPTION '{refusal}'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
                    f"FOR EACH ROW EXECUTE FUNCTION refuse_{table}()"
                )
            )
        else:
            conn.execute(
                text(
                    f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} WHEN {sqlite_when} "
                    f"BEGIN SELECT RAISE(ABORT, '{refusal}'); END"
                )
            )


def stored(s: Store, msg_id: str) -> bool:
    with s.engine.connect() as conn:
        return conn.execute(select(func.count()).where(t.messages.c.msg_id == msg_id)).scalar_one() == 1


def dead_reasons(s: Store) -> list[tuple[str, str]]:
    with s.engine.connect() as conn:
        return [(r.reason, r.detail) for r in conn.execute(select(t.dead_letters).order_by(t.dead_letters.c.id))]


def alarm() -> tuple[Inbound, str]:
    return inbound(AlarmRaise(key=f"gas:{new_id()}", code="gas", severity="critical", message="gas high"))


# --- every body type, generated from the protocol's own schemas ---------------------------------------------


def _uplink_channel(kind: str) -> str:
    ups = sorted(c.value for c in BODY_BY_TYPE[kind].CHANNELS if c in UPLINK)
    return ups[0] if ups else Channel.EVT.value  # cloud → device types sent up anyway: refused, never stored


def _body(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    schema = BODY_BY_TYPE[kind].model_json_schema()
    base = from_schema(schema)
    if kind == "media.snapshot":  # a real image's first bytes, so some get past validation
        return base | base.map(lambda b: {**b, "content_type": "image/jpeg", "data_b64": JPEG})
    if kind == "event":  # the events the store acts on: enrolments and gallery/allow-list reports
        resident = st.sampled_from(["res-1", "res-2", "res-9", "nobody"])
        emb = st.sampled_from(
            [
                base64.b64encode(np.ones(128, "<f4").tobytes()).decode(),
                base64.b64encode(np.full(128, np.nan, "<f4").tobytes()).decode(),
                "abc",
            ]
        )
        enrolled = st.fixed_dictionaries(
            {
                "code": st.just("gallery.enrolled"),
                "details": st.fixed_dictionaries({"resident_id": resident, "embedding_b64": emb}),
            }
        )
        revision = st.integers(min_value=-(2**64), max_value=2**64) | st.sampled_from([2**63 - 1, 2**63, -(2**63)])
        report = st.fixed_dictionaries(
            {
                "code": st.sampled_from(["gallery.status", "allowlist.applied"]),
                "details": st.fixed_dictionaries({"revision": revision}),
            }
        )
        return base | enrolled | report
    return base


@st.composite
def messages(draw: st.DrawFn) -> tuple[Inbound, str]:
    kind = draw(st.sampled_from(sorted(BODY_BY_TYPE)))
    body = draw(_body(kind))
    msg_id = draw(st.text(alphabet="0123456789ABCDEFGHJKMNPQRSTVWXYZ", min_size=26, max_size=26))
    doc = {"v": 1, "id": msg_id, "dev": DEV, "seq": draw(st.integers(0, 2**53)), "ts": now_ms(), "type": kind}
    # the standard library's encoder: it writes integers past 64 bits, which a hostile device could send too
    payload = json.dumps({**doc, "body": body}, ensure_ascii=draw(st.booleans())).encode()
    return Inbound(topic(SITE, DEV, _uplink_channel(kind)), payload, now_ms()), msg_id


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(batch=st.lists(messages(), min_size=1, max_size=6))
def test_every_message_is_stored_or_dead_lettered_and_the_alarm_after_it_is_stored(
    store: Store, batch: list[tuple[Inbound, str]]
) -> None:
    after = alarm()
    before_dead = len(dead_reasons(store))
    res = store.write_batch([i for i, _ in batch] + [after[0]])
    assert res.stored + res.duplicates + res.dead + res.ignored == len(batch) + 1
    assert stored(store, after[1]), "the alarm sent after the hostile messages was not stored"
    assert len(dead_reasons(store)) - before_dead == res.dead
    with store.engine.connect() as conn:
        raised = conn.execute(select(func.count()).where(alarm_tables.alarms.c.msg_id == after[1])).scalar_one()
    assert raised == 1


# --- the holes found by hand, each closed -------------------------------------------------------------------


def _raw(kind: str, body: dict[str, Any]) -> Inbound:
    doc = {"v": 1, "id": new_id(), "dev": DEV, "seq": 1, "ts": now_ms(), "type": kind, "body": body}
    return Inbound(topic(SITE, DEV, _uplink_channel(kind)), json.dumps(doc).encode(), now_ms())


def test_the_known_poison_messages_are_refused_and_the_alarm_after_them_is_stored(store: Store) -> None:
    poison = [
        _raw(
            "media.snapshot",
            {"ref": "s1", "content_type": "image/jpeg", "data_b64": "abc", "purpose": "visitor_request"},
        ),
        _raw("media.snapshot", {"ref": "s2", "content_type": "image/png", "data_b64": JPEG, "purpose": "perimeter"}),
        _raw("event", {"code": "gallery.status", "details": {"revision": 2**64}}),
        _raw("event", {"code": "gallery.status", "details": {"revision": 2**63}}),
        _raw("event", {"code": "door.note", "message": "a\u0000b"}),
        _raw("event", {"code": "door.note", "details": {"k\u0000": 1}}),
        _raw("alarm.raise", {"key": "k\u0000", "code": "x", "severity": "info", "message": ""}),
        _raw("health", {"uptime_s": 1.0, "agent_version": "1.0", "mem_rss_bytes": 2**63}),
        _raw("health", {"uptime_s": 1.0, "agent_version": "1.0", "outbox_depth": {"a" * 64: 1}}),
        _raw("elevator.fault", {"car": "c" * 64, "code": "x" * 64, "severity": "critical", "active": True}),
        _raw(
            "media.snapshot", {"ref": "s3", "content_type": "image/jpeg", "data_b64": "/9j/AB==", "purpose": "throwing"}
        ),
        _raw("alarm.raise", {"key": "k", "code": "x", "severity": "info", "message": "pay \u202etxt.exe"}),
    ]
    boolean = _raw("event", {"code": "gallery.status", "details": {"revision": True}})  # stored, nothing synced
    after = alarm()
    res = store.write_batch([*poison, boolean, after[0]])
    assert res.dead == len(poison) and stored(store, after[1]) and res.stored == 2 and not res.sync_requests
    assert {r for r, _d in dead_reasons(store)} == {"schema"}


def test_a_reading_the_database_refuses_is_dead_lettered_with_its_message_not_retried(store: Store) -> None:
    """The readings go in by one bulk statement (PostgreSQL: COPY, whose errors come from the driver itself): a
    reading the database refuses dead-letters its own message ``store_error``, once; the batch's other messages
    and their readings are stored, and nothing is retried as if the database had failed."""
    refuse_on_insert(
        store,
        "telemetry",
        "reading refused by the database",
        pg_when="NEW.metric = 'poison'",
        sqlite_when="NEW.metric = 'poison'",
    )
    good = [inbound(TelemetryBatch(readings=[Reading(metric="level", value=float(i), ts=1000 + i)])) for i in range(9)]
    bad = inbound(TelemetryBatch(readings=[Reading(metric="poison", value=1.0, ts=5)]))
    res = store.write_batch([i for i, _ in good[:4]] + [bad[0]] + [i for i, _ in good[4:]])
    assert res.stored == 9 and res.dead == 1 and res.readings == 9
    assert all(stored(store, m) for _, m in good) and not stored(store, bad[1])
    ((reason, detail),) = dead_reasons(store)
    assert reason == "store_error" and "reading refused by the database" in detail


def test_a_message_the_database_refuses_is_dead_lettered_and_its_batch_committed(store: Store) -> None:
    """A value valid on the wire that the database still refuses (here a trigger plays that database) is
    dead-lettered ``store_error`` with the error; the other messages of its batch are stored."""
    refuse_on_insert(
        store,
        "messages",
        "poison refused by the database",
        pg_when="NEW.body::text LIKE '%poison%'",
        sqlite_when="NEW.body LIKE '%poison%'",
    )
    good = [inbound(DeviceEvent(code="door.opened", details={"i": i})) for i in range(20)]
    bad = inbound(DeviceEvent(code="door.opened", message="poison"))
    after = alarm()
    items = [i for i, _ in good[:7]] + [bad[0]] + [i for i, _ in good[7:]] + [after[0]]
    res = store.write_batch(items)
    assert res.stored == 21 and res.dead == 1
    assert all(stored(store, m) for _, m in good) and stored(store, after[1]) and not stored(store, bad[1])
    [(reason, detail)] = dead_reasons(store)
    assert reason == "store_error" and "poison refused by the database" in detail
    assert store.metrics.get("ce_dead_letters_total", reason="store_error") == 1


# --- what a device may say about whom -----------------------------------------------------------------------


def _enrolment(resident: str, emb: np.ndarray | None = None) -> DeviceEvent:
    vec = np.ones(128, "<f4") if emb is None else emb
    details = {"resident_id": resident, "embedding_b64": base64.b64encode(vec.astype("<f4").tobytes()).decode()}
    return DeviceEvent(code="gallery.enrolled", details=details)


def _ask_enrolment(store: Store, resident: str, device: str = GATE) -> None:
    """An operator asked the gate to enrol this resident (the cloud's signed ``enroll`` command, recorded)."""
    with store.engine.begin() as conn:
        conn.execute(
            t.commands.insert().values(
                cid=new_id(),
                device_id=device,
                name="enroll",
                args={"resident_id": resident},
                deadline_ms=now_ms() + 60_000,
                status="ok",
                created_ms=now_ms(),
            )
        )


def test_a_gate_enrols_faces_only_for_consenting_residents_of_its_own_site(store: Store) -> None:
    for rid in ("res-1", "res-9", "res-2", "ghost"):
        _ask_enrolment(store, rid)
    own = inbound(_enrolment("res-1"), dev=GATE)
    other_site = inbound(_enrolment("res-9"), dev=GATE)
    no_consent = inbound(_enrolment("res-2"), dev=GATE)
    nobody = inbound(_enrolment("ghost"), dev=GATE)
    nan = inbound(_enrolment("res-1", np.full(128, np.nan)), dev=GATE)
    res = store.write_batch([m for m, _ in (own, other_site, no_consent, nobody, nan)])
    assert res.enrolments == [("res-1", own[0] and _enrolment("res-1").details["embedding_b64"])]
    reasons = dead_reasons(store)
    assert [r for r, _ in reasons] == ["not_permitted"] * 4
    assert "not a resident of site 'riverside'" in reasons[0][1]
    assert "has not consented" in reasons[1][1]
    assert "finite" in reasons[3][1]


def test_a_device_names_only_residents_and_plate_holders_of_its_own_site(store: Store) -> None:
    def decision(subject: str, method: str = "face") -> GateDecision:
        return GateDecision(door="a1", decision="open", reason="resident_match", method=method, subject_id=subject)  # type: ignore[arg-type]

    ok = inbound(decision("res-1"))
    foreign = inbound(decision("res-9"))
    foreign_plate = inbound(decision("res-9", "plate"))
    visitor = inbound(decision("operator-7", "visitor"))  # who answered: a person, not a resident id
    res = store.write_batch([m for m, _ in (ok, foreign, foreign_plate, visitor)])
    assert res.stored == 2 and stored(store, ok[1]) and stored(store, visitor[1])
    assert [r for r, _ in dead_reasons(store)] == ["not_permitted", "not_permitted"]


def test_a_device_cannot_take_over_another_devices_picture_or_call_a_flat_of_another_site(store: Store) -> None:
    from protocol.messages import VisitorRequest

    def snap(data: str) -> MediaSnapshot:
        return MediaSnapshot(ref="perimeter-z1-1", content_type="image/jpeg", data_b64=data, purpose="perimeter")

    squat = inbound(snap("/9j/"), dev=OTHER_DEV, site=OTHER_SITE)  # first, under the ref the real one will use
    real = inbound(snap(JPEG))
    flat_here = inbound(VisitorRequest(request_id=new_id(), door="a1", unit="1203", expires_ts=now_ms() + 60_000))
    no_such_flat = inbound(VisitorRequest(request_id=new_id(), door="a1", unit="0000", expires_ts=now_ms() + 60_000))
    res = store.write_batch([squat[0], real[0], flat_here[0], no_such_flat[0]])
    assert res.stored == 3 and stored(store, real[1]) and stored(store, flat_here[1])
    with store.engine.connect() as conn:
        rows = conn.execute(select(g.media.c.device_id, g.media.c.data).where(g.media.c.ref == "perimeter-z1-1"))
        pictures = {d: bytes(data) for d, data in rows}
    assert pictures == {OTHER_DEV: b"\xff\xd8\xff", DEV: base64.b64decode(JPEG)}  # each device's own
    assert [r for r, _ in dead_reasons(store)] == ["not_permitted"]


def test_a_device_cannot_choose_how_long_its_picture_is_kept(store: Store) -> None:
    forever = _raw(
        "media.snapshot", {"ref": "s9", "content_type": "image/jpeg", "data_b64": JPEG, "purpose": "archive"}
    )
    assert store.write_batch([forever]).dead == 1
    assert dead_reasons(store)[0][0] == "schema"


# --- through a real broker to a running cloud ----------------------------------------------------------------


async def test_a_hostile_stream_through_the_broker_stores_every_valid_alarm(
    make_cloud: MakeCloud, mosquitto: Mosquitto
) -> None:
    svc, api = make_cloud()
    register(api, SITE, DEV, "gate-02")
    corpus = hostile_corpus(SITE, DEV, OTHER_SITE)
    alarms = [
        envelope(AlarmRaise(key=f"gas:{i}", code="gas", severity="critical", message="gas"), dev=DEV, seq=i + 1)
        for i in range(len(corpus))
    ]
    stream: list[tuple[str, bytes]] = []
    for (top, payload), a in zip(corpus, alarms, strict=True):
        stream += [(top, payload), (topic(SITE, DEV, "alm"), encode(a))]
    async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="attacker") as c:
        for top, payload in stream:
            await c.publish(top, payload, qos=1)
    # 10 MB: the broker hangs up on whoever sends it (max_packet_size); the cloud never sees it
    with contextlib.suppress(aiomqtt.MqttError):
        async with aiomqtt.Client(mosquitto.host, mosquitto.port, identifier="flooder") as c:
            await c.publish(topic(SITE, DEV, "alm"), b"{" * (10 * 1024 * 1024), qos=1, timeout=5)
    after = envelope(AlarmRaise(key="after", code="gas", severity="critical", message="after"), dev=DEV, seq=999)
    await publish(mosquitto, [(topic(SITE, DEV, "alm"), encode(after))])
    ids = [a.id for a in alarms] + [after.id]
    await until(lambda: all(stored(svc.store, i) for i in ids), 30)
    health = api.get("/healthz")
    assert health.status_code == 200, health.text
    report = health.json()["ingest"]
    assert report["stalled"] is False and report["queue_depth"] == 0
    assert sum(report["dead_letters"].values()) >= len(corpus) - 3  # the three wildcard-ish topics may be ignored
    assert {"malformed_json", "schema", "spoofed_device", "unknown_device", "bad_topic", "too_large"} <= set(
        report["dead_letters"]
    )
    assert all(w.connected.is_set() for w in svc.workers)


async def test_a_stalled_database_makes_the_node_unhealthy_and_raises_an_alarm_until_it_catches_up(
    make_cloud: MakeCloud, mosquitto: Mosquitto, db_url: str
) -> None:
    svc, api = make_cloud(ingest_stall_s=1.0)
    register(api, SITE, DEV)
    consoles = svc.live.subscribe(lambda e: e.get("code") == "ingest_stalled")
    lock = _Lock(db_url)
    try:
        msg = envelope(AlarmRaise(key="gas", code="gas", severity="critical", message="gas"), dev=DEV, seq=1)
        await publish(mosquitto, [(topic(SITE, DEV, "alm"), encode(msg))])
        await until(lambda: api.get("/healthz").status_code == 503, 30)
        body = api.get("/healthz").json()
        assert body["status"] == "degraded" and body["ingest"]["stalled"] is True
        # the alarm waits on the alarm lane's worker (the other lane has nothing pending)
        assert max(w["oldest_pending_s"] for w in body["ingest"]["workers"]) >= 1.0
        assert not stored(svc.store, msg.id)
        told = await asyncio.wait_for(consoles.get(), 30)  # the consoles hear of it while the database is away
        assert told["event"] == "raised" and "behind" in told["message"]
    finally:
        lock.release()
    await until(lambda: stored(svc.store, msg.id), 60)
    await until(lambda: api.get("/healthz").status_code == 200, 30)

    def stall_alarm() -> str | None:
        with svc.engine.connect() as conn:
            return conn.execute(
                select(alarm_tables.alarms.c.state).where(alarm_tables.alarms.c.code == "ingest_stalled")
            ).scalar()

    await until(lambda: stall_alarm() == "cleared", 60)
    assert "ce_ingest_stalled 0" in api.get("/metrics").text


class _Lock:
    """Another client holding the messages table against writers (SQLite: the whole database)."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite"):
            import sqlite3

            self.conn: Any = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
            self.conn.execute("BEGIN EXCLUSIVE")
        else:
            import psycopg

            self.conn = psycopg.connect(url)
            self.conn.execute("LOCK TABLE messages IN EXCLUSIVE MODE")  # writers wait, readers read

    def release(self) -> None:
        self.conn.commit() if hasattr(self.conn, "pgconn") else self.conn.execute("COMMIT")
        self.conn.close()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SQLite, its default, in a by-hand run
def test_chaos_cloud_prints_its_report_and_loses_nothing(db_url: str) -> None:
    """``civicedge chaos cloud --json`` on a fresh PostgreSQL database: a short stream with a third of it hostile."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "civicedge_cli",
            "chaos",
            "cloud",
            "--json",
            "--duration",
            "3",
            "--rate",
            "200",
            "--devices",
            "10",
            "--hostile-share",
            "0.3",
            "--database-url",
            db_url,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    assert report["lost"] == 0 and report["valid_sent"] == report["valid_stored"] > 0
    assert report["hostile_sent"] > 0 and report["stalled_at_end"] is False
    assert {"malformed_json", "schema", "not_permitted", "spoofed_device", "unsigned", "bad_signature"} <= set(
        report["dead_letters"]
    )


def test_a_revoked_device_stays_revoked_whatever_a_stale_worker_heard(store: Store) -> None:
    """A worker that cached the device before another node revoked it still may not un-revoke it."""
    from sqlalchemy import update as sql_update

    from protocol.messages import DeviceState

    assert store.write_batch([inbound(DeviceState(status="online"), channel="state")[0]]).stored == 1
    with store.engine.begin() as conn:  # revoked elsewhere: this store's cache does not know yet
        conn.execute(sql_update(t.devices).where(t.devices.c.id == DEV).values(status="revoked"))
    store.write_batch([inbound(DeviceState(status="offline"), channel="state")[0]])  # its last will
    with store.engine.connect() as conn:
        assert conn.execute(select(t.devices.c.status).where(t.devices.c.id == DEV)).scalar_one() == "revoked"


def test_an_enrolment_nobody_asked_for_is_refused_and_one_request_takes_one_face(store: Store) -> None:
    """Even signed by the gate itself, a face is taken only when an operator asked that gate to enrol that
    resident, once per request (a gate whose key leaked cannot add faces at will)."""
    unasked = inbound(_enrolment("res-1", np.full(128, 0.5)), dev=GATE)
    res = store.write_batch([unasked[0]])
    assert res.enrolments == [] and "no enrolment of 'res-1' was asked" in dead_reasons(store)[0][1]
    _ask_enrolment(store, "res-1")
    first = inbound(_enrolment("res-1"), dev=GATE)
    assert store.write_batch([first[0]]).enrolments  # the gate's answer to the request
    second = inbound(_enrolment("res-1", np.full(128, 0.25)), dev=GATE)
    assert store.write_batch([second[0]]).enrolments == []
    assert "already answered" in dead_reasons(store)[-1][1]


def test_a_gateway_with_its_own_key_is_heard_only_when_it_signs(store: Store) -> None:
    """Whoever holds the broker can publish in a gateway's name, but cannot sign as it: an unsigned, forged or
    altered message from a gateway whose key the cloud holds is refused; its readings need no signature; a device
    without a key of its own (a board) is heard as before, but a face is never taken from one."""
    _ask_enrolment(store, "res-1")
    _ask_enrolment(store, "res-1", device=DEV)
    gas = AlarmRaise(key="gas:1", code="gas", severity="critical", message="gas high")
    ok = inbound(gas, dev=GATE)
    bare = Inbound(topic(SITE, GATE, "alm"), encode(envelope(gas, dev=GATE, seq=2)), now_ms())
    env = signed(generate_key(), envelope(gas, dev=GATE, seq=3))  # signed by a key that is not the gate's
    forged = Inbound(topic(SITE, GATE, "alm"), encode(env), now_ms())
    real = signed(GATE_KEY, envelope(_enrolment("res-1"), dev=GATE, seq=4))
    altered = real.model_copy(update={"body": _enrolment("res-1", np.full(128, 0.75))})  # its face swapped
    swapped = Inbound(topic(SITE, GATE, "evt"), encode(altered), now_ms())
    reading = inbound(TelemetryBatch(readings=[Reading(metric="t", value=1.0, ts=now_ms())]), dev=GATE)
    board_face = inbound(_enrolment("res-1"), dev=DEV)
    board_alarm = inbound(gas.model_copy(update={"key": "gas:2"}), dev=DEV)
    res = store.write_batch([ok[0], bare, forged, swapped, reading[0], board_face[0], board_alarm[0]])
    assert stored(store, ok[1]) and stored(store, reading[1]) and stored(store, board_alarm[1])
    assert res.enrolments == [] and res.stored == 3
    assert [r for r, _ in dead_reasons(store)] == ["unsigned", "bad_signature", "bad_signature", "unsigned"]
    assert "has no signing key registered" in dead_reasons(store)[-1][1]


def test_a_key_registered_on_another_node_is_used_at_once(store: Store) -> None:
    """A worker that cached a gateway without a key (or with its old key) reads it again before refusing: a
    re-provisioned gateway's signed messages are not lost to a stale cache."""
    from sqlalchemy import update as sql_update

    first = inbound(DeviceEvent(code="door.opened"))  # DEV, keyless: cached as such
    assert store.write_batch([first[0]]).stored == 1
    new_key = generate_key()
    with store.engine.begin() as conn:  # the API on another process registers its key
        conn.execute(sql_update(t.devices).where(t.devices.c.id == DEV).values(signing_key=public_key_b64(new_key)))
    env = signed(new_key, envelope(DeviceEvent(code="door.opened"), dev=DEV, seq=2))
    assert store.write_batch([Inbound(topic(SITE, DEV, "evt"), encode(env), now_ms())]).stored == 1
    # and from then on its unsigned word is refused
    assert store.write_batch([inbound(DeviceEvent(code="door.opened"))[0]]).dead_by_reason == {"unsigned": 1}


def test_a_cache_cleared_mid_batch_never_makes_a_keyed_gateway_keyless(store: Store, monkeypatch: Any) -> None:
    """Another worker (or the 30 s refresh) clearing the registry cache right after this batch looked its devices
    up must not let an unsigned message through in a keyed gateway's name: the batch keeps its own snapshot."""
    looked_up = store._known

    def racing(conn: Any, ids: set[str]) -> Any:
        out = looked_up(conn, ids)
        store.forget_device(GATE)  # cleared by someone else, between the look-up and the checks
        return out

    monkeypatch.setattr(store, "_known", racing)
    gas = AlarmRaise(key="gas:race", code="gas", severity="critical", message="gas high")
    bare = Inbound(topic(SITE, GATE, "alm"), encode(envelope(gas, dev=GATE, seq=1)), now_ms())
    assert store.write_batch([bare]).dead_by_reason == {"unsigned": 1}
    assert store.write_batch([inbound(gas, dev=GATE)[0]]).stored == 1  # its own signed word still goes through
