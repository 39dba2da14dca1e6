"""A community gate end to end: real broker, real cloud (SQLite and PostgreSQL), a real agent running the gate
unit with the I/O board simulator. Residents enrolled by photo through the cloud API reach the gate's gallery;
a visitor is confirmed from the resident app API; a gate that was offline catches up on missed changes."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from protocol import encode, envelope, topic
from protocol.messages import DeviceEvent
from simulators.camera import FACES
from simulators.fleet import gate_unit
from simulators.ioboard import IOBoardSim
from simulators.services import Mosquitto
from simulators.thermal import Scene
from tests.cloud.conftest import MakeCloud, device_key, register
from tests.cloud.test_ingest import publish
from tests.waits import until as _until


def gate_units(tmp_path: Path, board: IOBoardSim, **overrides: Any) -> list[dict[str, Any]]:
    """One gate unit on the I/O board simulator with the simulated camera."""
    extra = {"visitor_answer_s": 20, "sync_check_s": 2}
    return [gate_unit(board.port, tmp_path / "gallery.db", **(extra | overrides))]


async def until(cond: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
    return await _until(cond, timeout, what, thread=True)


async def test_resident_enrolled_in_the_cloud_and_a_visitor_confirmed_by_the_app(
    make_cloud: MakeCloud, run_agent: Any, tmp_path: Path, mosquitto: Mosquitto
) -> None:
    svc, client = make_cloud()
    register(client, "riverside", "gate-01")
    assert (
        client.post(
            "/api/sites/riverside/residents", json={"id": "res-1042", "unit": "1203", "consent": True}
        ).status_code
        == 201
    )
    photo = (FACES / "astronaut.png").read_bytes()
    r = await asyncio.to_thread(client.post, "/api/residents/res-1042/faces", content=photo)
    assert r.status_code == 201, r.text
    bad = client.post("/api/residents/res-1042/faces", content=b"not an image")
    assert bad.status_code == 422, bad.text
    assert svc.commands is not None
    board = IOBoardSim()
    own_key = tmp_path / "signing-key.pem"
    device_key(client, "gate-01", save_to=own_key)  # the gate signs what it says (its enrolments above all)
    try:
        agent = await run_agent(**svc.device_keys(), signing_key_file=own_key, units=gate_units(tmp_path, board))
        await until(lambda: agent.units and getattr(agent.units[0], "vision", None), 30, "the gate to load")
        gate = agent.units[0]
        # on connect the gate reports revision 0 (with its nonce); the cloud answers with a full snapshot
        await until(lambda: len(gate.gallery) == 1, 15, "the gallery snapshot")
        gate.camera.arrive("astronaut", Scene(distance_m=0.6), dwell_s=2)
        await until(lambda: board.pulses(0), 15, "the door to open for the resident")
        # a visitor rings flat 1203 from the keypad
        gate.camera.arrive("grace_hopper", Scene(distance_m=0.6), dwell_s=2)
        await until(lambda: any("flat number" in p for p in gate.prompts), 15, "the visitor prompt")
        call = asyncio.create_task(gate.keypad("1203#"))  # waits for the resident's answer

        def pending() -> list[dict[str, Any]]:
            return client.get("/api/visitor-requests", params={"unit": "1203", "status": "pending"}).json()["items"]

        (req,) = await until(pending, 15, "the request in the resident app")
        snap = await asyncio.to_thread(client.get, f"/api/media/{req['device_id']}/{req['snapshot_ref']}")
        assert (
            snap.status_code == 200 and snap.headers["content-type"] == "image/jpeg" and snap.content[:2] == b"\xff\xd8"
        )
        answer = await asyncio.to_thread(
            client.post, f"/api/visitor-requests/{req['request_id']}/answer", json={"approved": True, "by": "res-1042"}
        )
        assert answer.status_code == 200, answer.text
        assert (await asyncio.wait_for(call, 15))["result"] == "open"
        await until(lambda: len(board.pulses(0)) == 2, 15, "the door to open for the visitor")
        again = client.post(f"/api/visitor-requests/{req['request_id']}/answer", json={"approved": False, "by": "x"})
        assert again.status_code == 409 and "approved" in again.json()["error"]

        def log() -> list[dict[str, Any]]:
            return client.get("/api/gate/decisions", params={"device": "gate-01", "decision": "open"}).json()["items"]

        items = await until(lambda: len(log()) >= 2 and log(), 15, "the decision log")
        assert {i["body"]["reason"] for i in items} >= {"resident_match", "visitor_approved"}
        # an operator enrols the visitor, now a new resident, at the gate; the cloud takes the face over
        assert (
            client.post(
                "/api/sites/riverside/residents", json={"id": "res-2001", "unit": "0202", "consent": True}
            ).status_code
            == 201
        )
        gate.camera.arrive("grace_hopper", Scene(distance_m=0.55), dwell_s=10)
        await until(lambda: gate.last_frame is not None and gate.camera.person == "grace_hopper", 5, "the new resident")
        await asyncio.sleep(0.6)  # she has walked up to the terminal
        cmd = await asyncio.to_thread(svc.commands.send, "gate-01", "enroll", {"resident_id": "res-2001"}, 30)
        # whoever holds the broker races the gate's answer with a face of their own, in the gate's name
        mine = np.random.default_rng(666).normal(size=128).astype("<f4")
        forged = DeviceEvent(
            code="gallery.enrolled",
            details={"resident_id": "res-2001", "embedding_b64": base64.b64encode(mine.tobytes()).decode()},
        )
        await publish(
            mosquitto, [(topic("riverside", "gate-01", "evt"), encode(envelope(forged, dev="gate-01", seq=1)))]
        )

        def acked() -> str | None:
            from sqlalchemy import select

            from cloud.db import schema as t

            with svc.engine.connect() as conn:
                row = conn.execute(
                    select(t.commands.c.status, t.commands.c.reason).where(t.commands.c.cid == cmd["cid"])
                ).first()
            return f"{row.status}:{row.reason}" if row and row.status != "sent" else None

        assert (await until(acked, 15, "the enrol command's ack")).startswith("ok")
        await until(lambda: gate.gallery.revision == 2000, 15, "the cloud's delta with the gate-made face")
        assert set(gate.gallery.residents) == {"res-1042", "res-2001"}
        dead = client.get("/api/dead-letters", params={"reason": "unsigned"}).json()["items"]
        assert [d["device_id"] for d in dead] == ["gate-01"]  # the forged face was refused, the gate's own taken
        with svc.engine.connect() as conn:
            from sqlalchemy import func, select

            from cloud.gate import tables as g

            faces = conn.execute(select(func.count()).where(g.resident_faces.c.resident_id == "res-2001")).scalar_one()
        assert faces == 1
    finally:
        board.close()


async def test_offline_gate_catches_up_on_missed_gallery_changes(
    make_cloud: MakeCloud, run_agent: Any, tmp_path: Path, mosquitto: Any
) -> None:
    svc, client = make_cloud()
    register(client, "riverside", "gate-01")
    for rid in ("res-a", "res-b"):
        client.post("/api/sites/riverside/residents", json={"id": rid, "unit": "0101", "consent": True})
    import base64

    import numpy as np

    def emb(seed: int) -> str:
        v = np.random.default_rng(seed).normal(size=128).astype("<f4")
        return base64.b64encode(v.tobytes()).decode()

    assert client.post("/api/residents/res-a/embeddings", json={"embeddings_b64": [emb(1), emb(2)]}).status_code == 201
    board = IOBoardSim()
    try:
        agent = await run_agent(**svc.device_keys(), units=gate_units(tmp_path, board))
        await until(lambda: agent.units and getattr(agent.units[0], "vision", None), 30, "the gate to load")
        gate = agent.units[0]
        await until(lambda: len(gate.gallery) == 1 and gate.gallery.revision == 1000, 15, "the first snapshot")
        mosquitto.stop()  # the gate loses the cloud
        await until(lambda: not agent.uplink.connected.is_set(), 15, "the link to drop")
        svc.gate.add_faces("res-b", [np.random.default_rng(3).normal(size=128)])  # not delivered: broker down
        svc.gate.remove_resident("res-a")
        mosquitto.start()
        # the gate reports its revision again after reconnecting (and every sync_check_s): the cloud sends
        # exactly the two changes it missed, as one delta from 1000 to 3000
        await until(lambda: gate.gallery.revision == 3000, 30, "the catch-up after reconnecting")
        assert len(gate.gallery) == 1 and gate.gallery.search(np.zeros(128, np.float32)).reason != "empty"
    finally:
        board.close()
