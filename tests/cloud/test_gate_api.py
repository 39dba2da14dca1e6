"""Gate data in the cloud: plate normal form at the door of the API, change logs and the deltas a gateway at a
given revision receives (incremental, full, and a full snapshot split into a chain)."""

from __future__ import annotations

import base64

import numpy as np
from fastapi.testclient import TestClient

from cloud.gate.service import PART, STEP
from protocol.messages import GalleryDelta
from tests.cloud.conftest import MakeCloud, register


def emb(seed: int) -> str:
    return base64.b64encode(np.random.default_rng(seed).normal(size=128).astype("<f4").tobytes()).decode()


def test_plates_are_stored_in_normal_form_and_bad_ones_refused(make_cloud: MakeCloud) -> None:
    _svc, client = make_cloud()
    register(client, "riverside")
    r = client.post("/api/sites/riverside/plates", json={"plate": "京a 1234o", "holder": "res-1042"})
    assert r.status_code == 201 and r.json()["plate"] == "京A12340"
    bad = client.post("/api/sites/riverside/plates", json={"plate": "XA12345", "holder": "res-1"})
    assert bad.status_code == 422 and "province" in bad.json()["error"]
    window = client.post(
        "/api/sites/riverside/plates",
        json={"plate": "沪AD12345", "holder": "v", "kind": "visitor", "valid_from_ms": 10, "valid_until_ms": 5},
    )
    assert window.status_code == 422
    assert client.get("/api/sites/riverside/plates").json()["total"] == 1
    assert client.delete("/api/sites/riverside/plates/京A12340").status_code == 200
    assert client.delete("/api/sites/riverside/plates/京A12340").status_code == 404
    assert client.post("/api/sites/nowhere/plates", json={"plate": "京A12345", "holder": "x"}).status_code == 404


def enrol(client: TestClient, n: int, faces: int = 1) -> None:
    for i in range(n):
        assert (
            client.post(
                "/api/sites/riverside/residents", json={"id": f"res-{i}", "unit": "0101", "consent": True}
            ).status_code
            == 201
        )
        r = client.post(
            f"/api/residents/res-{i}/embeddings", json={"embeddings_b64": [emb(i * 10 + k) for k in range(faces)]}
        )
        assert r.status_code == 201, r.text


def test_deltas_incremental_full_and_chained(make_cloud: MakeCloud) -> None:
    svc, client = make_cloud()
    register(client, "riverside")
    enrol(client, 3)
    head = 3 * STEP
    assert svc.gate.deltas("riverside", "gallery", head) == []  # up to date
    (full,) = svc.gate.deltas("riverside", "gallery", None)
    assert isinstance(full, GalleryDelta) and full.base_revision is None and full.revision == head
    assert len(full.upserts) == 3
    client.delete("/api/residents/res-1")
    (inc,) = svc.gate.deltas("riverside", "gallery", head)
    assert inc.base_revision == head and inc.revision == head + STEP and inc.deletes == ["res-1"] and not inc.upserts
    # a snapshot too big for one message arrives as a chain; a gateway stuck part-way gets a fresh snapshot
    enrol_big = [(f"big-{i}", [emb(1000 + i), emb(2000 + i)]) for i in range(PART)]
    for rid, embs in enrol_big:
        client.post("/api/sites/riverside/residents", json={"id": rid, "consent": True})
        client.post(f"/api/residents/{rid}/embeddings", json={"embeddings_b64": embs})
    chain = svc.gate.deltas("riverside", "gallery", None)
    assert len(chain) == 3 and chain[0].base_revision is None
    assert [d.base_revision for d in chain[1:]] == [d.revision for d in chain[:-1]]
    assert chain[-1].revision % STEP == 0 and all(d.revision % STEP for d in chain[:-1])
    assert sum(len(d.upserts) for d in chain) == 2 + 2 * PART
    again = svc.gate.deltas("riverside", "gallery", chain[0].revision)
    assert again[0].base_revision is None  # not a real log point: start over


def test_visitor_answer_for_unknown_or_expired_requests(make_cloud: MakeCloud) -> None:
    _svc, client = make_cloud()
    r = client.post("/api/visitor-requests/01KAB3C4D5E6F7G8H9JKMN0001/answer", json={"approved": True, "by": "x"})
    assert r.status_code == 404
    assert client.get("/api/visitor-requests", params={"status": "bogus"}).status_code == 422
    assert client.get("/api/media/gate-01/nothing").status_code == 404
