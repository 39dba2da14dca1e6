"""The gate unit with the real vision models, a simulated camera and thermal array, and the I/O board
simulator on a pty: the lock pulse is seen on the board's relay, alarms and decisions in the outbox."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.outbox import Outbox
from edge.tasks import cancel_and_wait
from edge.trust import Trust
from edge.units.base import UnitContext
from edge.units.gate import GateUnit
from edge.units.gate_config import GateConfig
from edge.vision.detect import FaceDetector
from edge.vision.embed import Embedder
from protocol import encode, envelope, topic
from protocol.envelope import now_ms
from protocol.messages import GalleryDelta, GalleryEntry
from protocol.signing import generate_key, public_key_b64, sign_document
from protocol.topics import Channel, parse
from simulators.camera import photo
from simulators.ioboard import IOBoardSim
from simulators.thermal import Scene
from tests.sent import Sent
from tests.waits import until

LOCK, CONTACT, FIRE = 0, 0, 1

DOC_KEY = generate_key()  # the cloud's document key: gallery deltas are signed with it


@pytest.fixture(scope="module")
def astronaut_embedding() -> np.ndarray:
    det, emb = FaceDetector(), Embedder(1)
    a = photo("astronaut")
    return emb.embed(a, det.refine(a, det.detect(a)[0]))


@dataclass
class Rig:
    unit: GateUnit
    board: IOBoardSim
    outbox: Outbox
    commands: dict[str, Any]
    online: dict[str, bool] = field(default_factory=lambda: {"up": True})
    channel_handlers: dict[Channel, Any] = field(default_factory=dict)

    sent: Sent = field(init=False)

    def __post_init__(self) -> None:
        self.sent = Sent(self.outbox)

    def reasons(self) -> list[str]:
        return [d.reason for d in self.unit.decisions]

    async def alarms(self) -> list[str]:
        return [m["body"]["code"] for m in await self.sent("alarm.raise")]

    def arrive(self, person: str = "astronaut", **scene: Any) -> None:
        self.unit.camera.arrive(person, Scene(**{"distance_m": 0.6, **scene}), dwell_s=2.0)


@pytest.fixture
async def rig(tmp_path: Path, astronaut_embedding: np.ndarray) -> AsyncIterator[Rig]:
    board = IOBoardSim()
    cfg = GateConfig.model_validate(
        {
            "type": "gate",
            "door": "door-1",
            "io": {
                "type": "ioboard",
                "port": board.port,
                "outputs": {"lock": LOCK},
                "inputs": {"door_contact": CONTACT, "fire": FIRE},
                "watchdog_s": None,
            },
            "secret": "device-secret",
            "gallery": str(tmp_path / "gallery.db"),
            "camera": {"type": "simulated", "fps": 15},
            "open_s": 0.6,
            "held_open_s": 0.6,
            "cooldown_s": 5.0,
            "visitor_answer_s": 2.0,
        }
    )
    outbox = await Outbox(tmp_path / "outbox.db", "gate-01").open()
    commands: dict[str, Any] = {}
    unit = GateUnit(cfg)
    unit.gallery.enroll("res-astronaut", [astronaut_embedding], unit="12-0304")
    r = Rig(unit, board, outbox, commands)
    ctx = UnitContext(
        "gate-01",
        outbox,
        commands.__setitem__,
        online=lambda: r.online["up"],
        subscribe=r.channel_handlers.__setitem__,
        trust=Trust("gate-01", {"documents": public_key_b64(DOC_KEY)}),
    )
    task = asyncio.create_task(unit.run(ctx))
    await until(lambda: unit.vision is not None and unit.camera is not None, 30, "the gate to load its models")
    await until(lambda: board.requests >= 2, 5, "the gate to talk to its I/O board")

    async def locked_at_start() -> bool | None:  # a test that kills the board must not race the start-up relock
        return any(m["body"]["reason"] == "startup" for m in await r.sent("relay.state")) or None

    await until(locked_at_start, 10, "the lock set at start-up")
    yield r
    await cancel_and_wait(task)
    assert task.cancelled()  # the unit stops when told, without an error of its own
    await outbox.close()
    board.close()


async def test_resident_opens_the_door(rig: Rig) -> None:
    rig.arrive("astronaut")
    await until(lambda: "resident_match" in rig.reasons(), what="a resident match")
    await until(lambda: rig.board.pulses(LOCK), 3, "the lock pulse to end")
    assert rig.board.pulses(LOCK)[0] == pytest.approx(0.6, abs=0.15)
    d = next(d for d in rig.unit.decisions if d.reason == "resident_match")
    assert d.decision == "open" and d.subject_id == "res-astronaut" and d.temperature_c is not None
    relays = await rig.sent("relay.state")
    assert any(m["body"]["reason"] == "resident_match" and m["body"]["pulse_s"] == 0.6 for m in relays)
    await until(lambda: "welcome" in rig.unit.prompts, 5, "the welcome prompt")


@pytest.mark.parametrize(("scene", "reason"), [({"core_c": 38.6}, "fever"), ({"kind": "paper"}, "spoof")])
async def test_fever_and_spoof_keep_the_door_shut_and_raise_alarms(
    rig: Rig, scene: dict[str, Any], reason: str
) -> None:
    rig.arrive("astronaut", **scene)
    await until(lambda: reason in rig.reasons(), what=reason)
    await until_alarm(rig, f"gate.{reason}")
    # the screen's prompt follows the alarm into the outbox: await it rather than race it
    await until(lambda: "please see the attendant" in rig.unit.prompts, 5, "the attendant prompt")
    assert not rig.board.history, "the lock must never have moved"
    if reason == "fever":
        (screening,) = await rig.sent("thermal.screening")
        assert screening["body"]["fever"] and abs(screening["body"]["temperature_c"] - 38.6) < 0.3


async def visitor_at_the_door(rig: Rig) -> None:
    rig.arrive("grace_hopper")
    await until(lambda: any("flat number" in p for p in rig.unit.prompts), what="the visitor prompt")


async def test_visitor_approved_by_the_resident(rig: Rig) -> None:
    await visitor_at_the_door(rig)
    await rig.commands["keypad"]({"keys": "1203#"})
    (req,) = await until(lambda: rig.unit._answers and list(rig.unit._answers), what="a visitor request")
    sent = await rig.sent("visitor.request")
    assert sent[0]["body"]["unit"] == "1203" and sent[0]["body"]["request_id"] == req
    (snap,) = await rig.sent("media.snapshot")
    jpeg = base64.b64decode(snap["body"]["data_b64"])
    assert jpeg[:2] == b"\xff\xd8" and len(jpeg) <= 60_000 and snap["body"]["ref"] == sent[0]["body"]["snapshot_ref"]
    assert (await rig.commands["visitor-answer"]({"request_id": req, "approved": True, "by": "res-1203"}))[
        "result"
    ] == "delivered"
    await until(lambda: "visitor_approved" in rig.reasons(), what="the door to open for the visitor")
    await until(lambda: rig.board.pulses(LOCK), 3, "the lock pulse")


async def test_visitor_denied_and_unanswered(rig: Rig) -> None:
    await visitor_at_the_door(rig)
    await rig.commands["keypad"]({"keys": "1203#"})
    (req,) = await until(lambda: list(rig.unit._answers), what="a visitor request")
    await rig.commands["visitor-answer"]({"request_id": req, "approved": False, "by": "res-1203"})
    await until(lambda: "visitor_denied" in rig.reasons(), what="the denial")
    await rig.commands["keypad"]({"keys": "0101#"})  # nobody answers in that flat
    await until(lambda: "no answer from the flat" in rig.unit.prompts, 5, "no answer")
    assert "visitor_no_answer" in rig.reasons()
    assert not rig.board.history


async def test_visitor_with_the_cloud_down_is_told_at_once(rig: Rig) -> None:
    rig.online["up"] = False
    t0 = time.monotonic()
    result = await rig.unit.keypad("1203#")
    assert result == {"result": "offline"} and time.monotonic() - t0 < 0.5
    assert "cloud_unreachable" in rig.reasons()
    assert any("cannot be reached" in p for p in rig.unit.prompts)
    assert not await rig.sent("visitor.request")


async def test_visitor_pass_works_offline_once_and_only_in_its_window(rig: Rig) -> None:
    rig.online["up"] = False
    await rig.commands["visitor-pass"](
        {
            "code": "482913",
            "issued_by": "res-1203",
            "valid_from_ms": now_ms() - 1000,
            "valid_until_ms": now_ms() + 60_000,
        }
    )
    await rig.commands["visitor-pass"](
        {"code": "111222", "valid_from_ms": now_ms() + 3_600_000, "valid_until_ms": now_ms() + 7_200_000}
    )
    assert (await rig.unit.keypad("*482913#"))["result"] == "open"
    await until(lambda: rig.board.pulses(LOCK), 3, "the lock pulse")
    assert (await rig.unit.keypad("*482913#"))["result"] == "pass_invalid"  # used up
    assert (await rig.unit.keypad("*111222#"))["result"] == "pass_invalid"  # not yet valid
    assert len(rig.board.pulses(LOCK)) == 1


async def test_fire_alarm_opens_until_cleared(rig: Rig) -> None:
    rig.board.set_input(FIRE, True)
    await until(lambda: rig.board.output(LOCK), 3, "the lock to release")
    await until_alarm(rig, "gate.fire_mode")
    assert rig.unit.fire_mode, (rig.unit.decisions, await rig.sent("alarm.raise"), rig.board.history)
    rig.board.set_input(CONTACT, True)  # people streaming out: not a forced door
    await until(lambda: rig.unit.door_open_since is not None, 2, "the door contact")
    rig.board.set_input(FIRE, False)
    await until(lambda: not rig.board.output(LOCK), 3, "the lock to close again")
    assert "gate.door_forced" not in await rig.alarms()
    clears = await until(lambda: rig.sent("alarm.clear"), 3, "the alarm cleared")
    assert [m["body"]["code"] for m in clears] == ["gate.fire_mode"]


async def test_door_forced_and_held_open(rig: Rig) -> None:
    rig.board.set_input(CONTACT, True)  # nobody was let in
    codes = await until_alarm(rig, "gate.door_forced")
    assert "gate.door_held_open" not in codes
    rig.board.set_input(CONTACT, False)
    await rig.commands["open-door"]({"by": "operator-7"})
    rig.board.set_input(CONTACT, True)
    await until_alarm(rig, "gate.door_held_open", timeout=4)
    rig.board.set_input(CONTACT, False)
    await until(lambda: rig.unit.door_open_since is None, 2, "the door to close")
    clears = await until(lambda: rig.sent("alarm.clear"), 3, "the alarm cleared")
    assert clears[-1]["body"]["code"] == "gate.door_held_open"


async def until_alarm(rig: Rig, code: str, timeout: float = 3.0) -> list[str]:
    async def check() -> list[str] | None:
        codes = await rig.alarms()
        return codes if code in codes else None

    return await until(check, timeout, f"the alarm {code}")  # type: ignore[no-any-return]


async def test_dead_lock_controller_fails_secure(rig: Rig) -> None:
    rig.board.alive = False
    result = await rig.commands["open-door"]({"by": "operator-7"})
    assert result == {"opened": False}
    assert "gate.lock_fault" in await rig.alarms()
    assert rig.unit.decisions[-1].reason == "lock_fault"
    assert not rig.board.history
    # the controller answers again: the next opening works and the fault clears
    rig.board.alive = True
    assert await rig.commands["open-door"]({"by": "operator-7"}) == {"opened": True}
    clears = await until(lambda: rig.sent("alarm.clear"), 3, "the alarm cleared")
    assert [m["body"]["code"] for m in clears] == ["gate.lock_fault"] and not rig.unit.lock_faulted


def delta(
    revision: int,
    base: int | None,
    upserts: dict[str, np.ndarray],
    deletes: list[str] = (),  # type: ignore[assignment]
    nonce: str | None = None,
) -> bytes:
    body = GalleryDelta(
        revision=revision,
        base_revision=base,
        nonce=nonce,
        upserts=[
            GalleryEntry(resident_id=k, embedding_b64=base64.b64encode(v.astype("<f4").tobytes()).decode())
            for k, v in upserts.items()
        ],
        deletes=list(deletes),
    )
    return encode(envelope(sign_document(DOC_KEY, body, "gate-01"), dev="gate-01", seq=0))


async def test_gallery_deltas_apply_in_order_and_ask_for_a_resync_when_behind(
    rig: Rig, astronaut_embedding: np.ndarray
) -> None:
    async def announced() -> list[dict[str, Any]]:
        events = await rig.sent("event")
        return [m["body"]["details"] for m in events if m["body"]["code"] == "gallery.status"]

    (asked,) = await until(announced, 3, "the gallery announced")
    assert asked["revision"] == 0 and len(asked["nonce"]) >= 16  # an empty copy asks with a nonce
    handler = rig.channel_handlers[Channel.GALLERY]
    t = parse(topic("riverside", "gate-01", "gallery"))
    other = np.random.default_rng(1).normal(size=128).astype(np.float32)
    snapshot = {"res-astronaut": astronaut_embedding, "res-other": other}
    # a signed snapshot that does not answer this request (an old one, replayed to a wiped gate) is refused
    await handler(t, delta(5, None, snapshot))
    await handler(t, delta(5, None, snapshot, nonce="an-earlier-request"))
    refused = [m["body"] for m in await rig.sent("event") if m["body"]["code"] == "gallery.rejected"]
    assert [e["details"]["reason"] for e in refused] == ["stale_revision"] * 2 and rig.unit.gallery.revision == 0
    await handler(t, delta(5, None, snapshot, nonce=asked["nonce"]))
    assert rig.unit.gallery.revision == 5 and len(rig.unit.gallery) == 2
    await handler(t, delta(7, 6, {"res-third": other}))  # missed revision 6
    assert rig.unit.gallery.revision == 5
    events = [m["body"] for m in await rig.sent("event")]
    assert any(e["code"] == "gallery.resync" and e["details"]["revision"] == 5 for e in events)
    await handler(t, delta(6, 5, {}, ["res-other"]))
    assert rig.unit.gallery.revision == 6 and len(rig.unit.gallery) == 1
    await handler(t, b"{not json")
    rejected = [m["body"] for m in await rig.sent("event") if m["body"]["code"] == "gallery.rejected"]
    assert rejected[-1]["details"]["reason"] == "malformed_json"
    rig.arrive("astronaut")  # still recognised after the deltas
    await until(lambda: "resident_match" in rig.reasons(), what="a match after the deltas")
