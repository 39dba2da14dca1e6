"""Face data at rest, on SQLite and PostgreSQL: embeddings sealed in the database and bound to their resident,
a gate's enrolment event logged without its embedding, the key rotated with every row re-sealed, and erasure
scrubbing every log that names the resident (decisions, screenings, plate reads, lift requests)."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import paho.mqtt.publish as mqtt_publish
import pytest
from sqlalchemy import insert, select, update

from cloud.db import schema as t
from cloud.gate import tables as g
from cloud.gate.vault import MAGIC, FaceVault, VaultError
from cloud.ingest.store import now_ms
from protocol import encode, envelope
from protocol.messages import DeviceEvent
from protocol.signing import signed
from protocol.topics import topic
from simulators.services import Mosquitto
from tests.cloud.conftest import MakeCloud, device_key, register
from tests.waits import wait


def _emb(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=128).astype("<f4")
    return v / np.linalg.norm(v)


def _b64(v: np.ndarray) -> str:
    return base64.b64encode(v.astype("<f4").tobytes()).decode()


def test_embeddings_are_sealed_for_their_resident_and_the_key_rotates(make_cloud: MakeCloud, tmp_path: Path) -> None:
    svc, api = make_cloud()
    register(api, "riverside", "gate-01")
    for rid in ("res-1", "res-2"):
        assert (
            api.post("/api/sites/riverside/residents", json={"id": rid, "unit": "0101", "consent": True}).status_code
            == 201
        )
        assert api.post(f"/api/residents/{rid}/embeddings", json={"embeddings_b64": [_b64(_emb(1))]}).status_code == 201
    with svc.engine.connect() as conn:
        rows = conn.execute(
            select(g.resident_faces.c.id, g.resident_faces.c.resident_id, g.resident_faces.c.embedding)
        ).all()
    raw = _emb(1).astype("<f4").tobytes()
    assert all(bytes(r.embedding).startswith(MAGIC) and raw not in bytes(r.embedding) for r in rows)
    # what the gates get is the embedding itself
    (delta,) = svc.gate.deltas("riverside", "gallery", None)
    assert {base64.b64decode(e.embedding_b64) for e in delta.upserts} == {raw}
    # a sealed row moved to another resident does not open (the resident is bound into the seal)
    vault = svc.gate.vault
    with pytest.raises(VaultError, match="does not open"):
        vault.open(bytes(rows[0].embedding), "res-2" if rows[0].resident_id == "res-1" else "res-1")
    # a row stored before sealing existed still reads, and the rotation seals it; the old key is gone after
    with svc.engine.begin() as conn:
        conn.execute(update(g.resident_faces).where(g.resident_faces.c.id == rows[0].id).values(embedding=raw))
    old_key = vault.key
    assert vault.rotate(svc.engine) == 2
    assert vault.key != old_key and not vault.path.with_name(vault.path.name + ".previous").exists()
    fresh = FaceVault(vault.path)  # what the next start reads
    with svc.engine.connect() as conn:
        for r in conn.execute(select(g.resident_faces.c.resident_id, g.resident_faces.c.embedding)):
            assert bytes(r.embedding).startswith(MAGIC) and fresh.open(bytes(r.embedding), r.resident_id) == raw


def test_an_enrolment_is_logged_without_its_face_and_erasure_scrubs_every_log(
    make_cloud: MakeCloud, mosquitto: Mosquitto
) -> None:
    svc, api = make_cloud()
    register(api, "riverside", "gate-01")
    gate_key = device_key(api, "gate-01")
    assert (
        api.post("/api/sites/riverside/residents", json={"id": "res-9", "unit": "0909", "consent": True}).status_code
        == 201
    )
    assert svc.commands is not None
    svc.commands.send("gate-01", "enroll", {"resident_id": "res-9"}, 30)  # an operator asks the gate to enrol her
    enrolled = DeviceEvent(code="gallery.enrolled", details={"resident_id": "res-9", "embedding_b64": _b64(_emb(9))})
    mqtt_publish.single(
        topic("riverside", "gate-01", "evt"),
        encode(signed(gate_key, envelope(enrolled, dev="gate-01", seq=1))),
        qos=1,
        hostname=mosquitto.host,
        port=mosquitto.port,
    )

    def faces() -> int:
        with svc.engine.connect() as conn:
            return len(
                conn.execute(select(g.resident_faces.c.id).where(g.resident_faces.c.resident_id == "res-9")).all()
            )

    wait(lambda: faces() == 1, 10, "the gate-made face taken over")
    with svc.engine.connect() as conn:
        (body,) = [r.body for r in conn.execute(select(t.messages.c.body).where(t.messages.c.type == "event"))]
    assert body["details"] == {"resident_id": "res-9"}  # the embedding is not in the message log
    # what else names her: a screening, a plate read, a lift request (stored as ingestion stores them)
    with svc.engine.begin() as conn:
        for i, (typ, extra) in enumerate(
            (
                ("thermal.screening", {"temperature_c": 36.5}),
                ("plate.read", {"plate": "京A12340"}),
                ("lift.request", {"kind": "retrieve"}),
            )
        ):
            conn.execute(
                insert(t.messages).values(
                    msg_id=f"01KTEST{i:019d}",
                    site_id="riverside",
                    device_id="gate-01",
                    type=typ,
                    channel="evt",
                    seq=10 + i,
                    device_ts=now_ms(),
                    received_ms=now_ms(),
                    body={"subject_id": "res-9", **extra},
                )
            )
    out = api.post("/api/residents/res-9/consent/withdraw")
    assert out.status_code == 200 and out.json()["log_entries_scrubbed"] == 4
    with svc.engine.connect() as conn:
        bodies = [r.body for r in conn.execute(select(t.messages.c.body))]
    assert "res-9" not in str(bodies)
