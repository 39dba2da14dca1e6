"""Personal data and roles through the API, on SQLite and PostgreSQL: consent before faces, erasure followed
gate by gate, the message log scrubbed, retention enforced, residents confined to their own flat, and the
live channel filtered by department."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
import paho.mqtt.publish as mqtt_publish
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from cloud.auth import tables as a
from cloud.auth.scope import sees_event
from cloud.auth.service import User
from cloud.db import schema as t
from cloud.gate import tables as g
from cloud.ingest.store import now_ms
from cloud.live import LiveHub
from cloud.metrics import Metrics
from protocol import encode, envelope, new_id
from protocol.messages import Body, DeviceEvent, GateDecision
from protocol.signing import signed
from protocol.topics import topic
from simulators.services import Mosquitto
from tests.cloud.conftest import MakeCloud, device_key, register
from tests.cloud.test_auth import login
from tests.waits import wait

PW = "correct horse battery"


def _emb(seed: int) -> str:
    v = np.random.default_rng(seed).normal(size=128).astype("<f4")
    return base64.b64encode(v.tobytes()).decode()


def _say(broker: Mosquitto, device: str, body: Body, seq: int, key: Ed25519PrivateKey | None = None) -> None:
    payload = encode(signed(key, envelope(body, dev=device, seq=seq)))
    mqtt_publish.single(topic("riverside", device, "evt"), payload, qos=1, hostname=broker.host, port=broker.port)


def test_consent_erasure_per_gate_and_log_scrubbing(make_cloud: MakeCloud, mosquitto: Mosquitto) -> None:
    svc, client = make_cloud()
    register(client, "riverside", "gate-01", "gate-02")
    gate_key = device_key(client, "gate-01")
    assert client.post("/api/sites/riverside/residents", json={"id": "res-9", "unit": "0909"}).status_code == 201
    refused = client.post("/api/residents/res-9/embeddings", json={"embeddings_b64": [_emb(1)]})
    assert refused.status_code == 422 and "consent" in refused.json()["error"]
    assert client.post("/api/residents/res-9/consent").status_code == 200
    added = client.post("/api/residents/res-9/embeddings", json={"embeddings_b64": [_emb(1)]})
    assert added.status_code == 201, added.text
    # the face data a gate's log holds about her: a decision naming her, an enrolment carrying an embedding
    _say(
        mosquitto,
        "gate-01",
        GateDecision(
            door="d1", decision="open", reason="resident_match", method="face", subject_id="res-9", score=0.93
        ),
        1,
        gate_key,
    )
    assert svc.commands is not None
    svc.commands.send("gate-01", "enroll", {"resident_id": "res-9"}, 30)  # asked of the gate by an operator
    _say(
        mosquitto,
        "gate-01",
        DeviceEvent(code="gallery.enrolled", details={"resident_id": "res-9", "embedding_b64": _emb(2)}),
        2,
        gate_key,
    )
    wait(lambda: client.get("/api/events", params={"device": "gate-01"}).json()["total"] == 2, 10, "the log")

    out = client.post("/api/residents/res-9/consent/withdraw")
    assert out.status_code == 200 and out.json()["log_entries_scrubbed"] == 2
    rev = out.json()["revision"]
    with svc.engine.connect() as conn:
        assert conn.execute(select(g.resident_faces).where(g.resident_faces.c.resident_id == "res-9")).first() is None
        assert conn.execute(select(g.residents.c.consent_ms).where(g.residents.c.id == "res-9")).scalar() is None
        bodies = [r.body for r in conn.execute(select(t.messages.c.body).where(t.messages.c.device_id == "gate-01"))]
    assert "res-9" not in str(bodies) and "embedding_b64" not in str(bodies)
    (e,) = client.get("/api/erasures").json()
    assert (e["reason"], e["pending_gates"], e["completed_ms"]) == ("withdrawn", ["gate-01", "gate-02"], None)
    # each gate confirms by reporting the revision it has applied
    _say(mosquitto, "gate-01", DeviceEvent(code="gallery.applied", details={"revision": rev}), 3, gate_key)
    wait(lambda: client.get("/api/erasures").json()[0]["pending_gates"] == ["gate-02"], 10, "gate-01's confirmation")
    _say(mosquitto, "gate-02", DeviceEvent(code="gallery.status", details={"revision": rev + 1000}), 1)
    wait(lambda: client.get("/api/erasures").json()[0]["completed_ms"], 10, "the erasure to complete")
    # no faces without consent again; the resident record stays for plates and visitors
    again = client.post("/api/residents/res-9/embeddings", json={"embeddings_b64": [_emb(3)]})
    assert again.status_code == 422
    assert client.get("/api/sites/riverside/residents").json()["total"] == 1


def test_retention_of_gate_logs_and_visitor_snapshots(make_cloud: MakeCloud) -> None:
    svc, _client = make_cloud(gate_log_retention_days=30, visitor_snapshot_retention_days=7)
    now, day = now_ms(), 86_400_000
    with svc.engine.begin() as conn:
        conn.execute(insert(t.sites).values(id="riverside", name="", created_ms=now))
        for age, n in ((40, 1), (10, 2)):
            conn.execute(
                insert(t.messages).values(
                    msg_id=new_id(),
                    site_id="riverside",
                    device_id="gate-01",
                    type="gate.decision",
                    channel="evt",
                    seq=n,
                    device_ts=now - age * day,
                    received_ms=now - age * day,
                    body={"decision": "open"},
                )
            )
            conn.execute(
                insert(g.visitor_requests).values(
                    request_id=new_id(),
                    site_id="riverside",
                    device_id="gate-01",
                    door="d1",
                    unit="0101",
                    status="expired",
                    created_ms=now - age * day,
                    expires_ms=now - age * day,
                )
            )
            conn.execute(
                insert(g.media).values(
                    ref=f"snap-{age}",
                    device_id="gate-01",
                    content_type="image/jpeg",
                    purpose="visitor_request",
                    data=b"\xff\xd8",
                    received_ms=now - age * day,
                    note="",
                )
            )
    assert svc.apply_retention(now) == 1 + 1 + 2  # the 40-day decision and request; both snapshots (> 7 days)
    with svc.engine.connect() as conn:
        assert len(conn.execute(select(t.messages.c.id)).all()) == 1
        assert len(conn.execute(select(g.visitor_requests.c.request_id)).all()) == 1
        assert conn.execute(select(g.media.c.ref)).first() is None


def _request(svc: Any, unit: str, ref: str) -> str:
    rid = new_id()
    with svc.engine.begin() as conn:
        conn.execute(
            insert(g.media).values(
                ref=ref,
                device_id="gate-01",
                content_type="image/jpeg",
                purpose="visitor_request",
                data=b"\xff\xd8",
                received_ms=now_ms(),
                note="",
            )
        )
        conn.execute(
            insert(g.visitor_requests).values(
                request_id=rid,
                site_id="riverside",
                device_id="gate-01",
                door="d1",
                unit=unit,
                snapshot_ref=ref,
                status="pending",
                created_ms=now_ms(),
                expires_ms=now_ms() + 60_000,
            )
        )
    return rid


def test_a_resident_sees_and_answers_only_their_own_flat(make_cloud: MakeCloud) -> None:
    svc, client = make_cloud()
    register(client, "riverside", "gate-01")
    client.post("/api/sites/riverside/residents", json={"id": "res-1203", "unit": "1203"})
    mine, theirs = _request(svc, "1203", "snap-mine"), _request(svc, "0808", "snap-theirs")
    svc.auth.create_user("chen", PW, "resident", resident_id="res-1203")
    phone = TestClient(client.app)
    csrf = login(phone, "chen", PW)
    listed = phone.get("/api/visitor-requests", params={"unit": "0808"}).json()["items"]  # asks for another flat
    assert [r["request_id"] for r in listed] == [mine]
    assert phone.get("/api/media/gate-01/snap-mine").status_code == 200
    assert phone.get("/api/media/gate-01/snap-theirs").status_code == 404
    assert phone.get("/api/media/gate-02/snap-mine").status_code == 404  # the same ref from another device
    assert (
        phone.post(f"/api/visitor-requests/{theirs}/answer", json={"approved": True}, headers=csrf).status_code == 404
    )
    assert phone.get("/api/devices").status_code == 403
    assert phone.get("/api/alarms").status_code == 403
    with svc.engine.connect() as conn:  # the API is closed to the anonymous client once accounts exist
        audit = conn.execute(select(a.audit_log.c.username, a.audit_log.c.action)).all()
    assert ("chen", "login") in [tuple(r) for r in audit]
    assert TestClient(client.app).get("/api/devices").status_code == 401  # no cookie, no token
    # a resident registered without a flat sees no one's visitors (not everyone's)
    client.post("/api/sites/riverside/residents", json={"id": "res-lobby"})
    svc.auth.create_user("lin", PW, "resident", resident_id="res-lobby")
    lobby = TestClient(client.app)
    login(lobby, "lin", PW)
    assert lobby.get("/api/visitor-requests").json()["items"] == []
    page = lobby.get("/console/m/visitors")
    assert page.status_code == 200 and "0808" not in page.text and "1203" not in page.text


async def test_the_live_channel_shows_each_department_its_own_alarms() -> None:
    hub = LiveHub(Metrics())
    water = User(1, "w", "department", "water", None, "en")
    ops = User(2, "o", "operator", None, None, "en")
    resident = User(3, "r", "resident", None, "res-1", "en")
    subs = {u.username: hub.subscribe(lambda ev, u=u: sees_event(u, ev)) for u in (water, ops, resident)}
    events = [
        {
            "kind": "alarm",
            "event": "raised",
            "id": 1,
            "device_id": "mh-1",
            "department_id": "water",
            "confidential": False,
        },
        {
            "kind": "alarm",
            "event": "raised",
            "id": 2,
            "device_id": "mh-2",
            "department_id": "roads",
            "confidential": False,
        },
        {"kind": "gate", "device_id": "gate-01", "decision": "open"},
    ]
    await asyncio.to_thread(hub.publish, *events)  # from another thread, as ingestion does

    async def drain(name: str, n: int) -> list[Any]:
        return [await asyncio.wait_for(subs[name].get(), 5) for _ in range(n)]

    assert [e.get("id") for e in await drain("w", 1)] == [1]
    assert [e["kind"] for e in await drain("o", 3)] == ["alarm", "alarm", "gate"]
    assert subs["w"].queue.empty() and subs["r"].queue.empty()
    hub.close()
    assert (await drain("r", 1))[0]["kind"] == "closed"
    for s in subs.values():
        s.close()
    assert hub.metrics.render().count("ce_live_subscribers 0") == 1
