"""The barrier unit with an ANPR camera on a serial link and a Modbus relay module (barrier hold-open coil,
vehicle loop input) — the barrier goes up for allowed plates and never comes down on a vehicle."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge.outbox import Outbox
from edge.tasks import cancel_and_wait
from edge.trust import Trust
from edge.units.barrier import BarrierUnit
from edge.units.barrier_config import BarrierConfig
from edge.units.base import UnitContext
from protocol import encode, envelope, topic
from protocol.envelope import now_ms
from protocol.messages import AllowlistDelta, PlateEntry
from protocol.signing import generate_key, public_key_b64, sign_document
from protocol.topics import Channel, parse
from simulators.anpr import SerialAnpr, TcpAnpr
from simulators.modbus_relay import ModbusRelaySim
from tests.sent import Sent
from tests.waits import until

BARRIER, LOOP = 0, 0

DOC_KEY = generate_key()  # the cloud's document key: allow-list deltas are signed with it


@dataclass
class Rig:
    unit: BarrierUnit
    relay: ModbusRelaySim
    camera: SerialAnpr
    outbox: Outbox
    handlers: dict[Channel, Any]

    def reasons(self) -> list[str]:
        return [d.reason for d in self.unit.decisions]

    trust: Trust

    async def deliver(self, delta: AllowlistDelta) -> None:
        """As the cloud sends it: signed, and carrying back the nonce the barrier asked with."""
        delta = delta.model_copy(update={"nonce": self.trust.nonce})
        await self.handlers[Channel.GALLERY](
            parse(topic("riverside", "barrier-01", "gallery")),
            encode(envelope(sign_document(DOC_KEY, delta, "barrier-01"), dev="barrier-01", seq=0)),
        )


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    relay, camera = ModbusRelaySim(unit_id=1), SerialAnpr()
    cfg = BarrierConfig.model_validate(
        {
            "type": "barrier",
            "lane": "north-in",
            "io": {"type": "modbus", "port": relay.port, "outputs": {"barrier": BARRIER}, "inputs": {"loop": LOOP}},
            "anpr": {"type": "serial", "port": camera.port},
            "open_s": 1.0,
            "clear_s": 0.3,
            "allowlist": str(tmp_path / "allow.db"),
        }
    )
    outbox = await Outbox(tmp_path / "outbox.db", "barrier-01").open()
    handlers: dict[Channel, Any] = {}
    unit = BarrierUnit(cfg)
    trust = Trust("barrier-01", {"documents": public_key_b64(DOC_KEY)})
    task = asyncio.create_task(
        unit.run(
            UnitContext(
                "barrier-01",
                outbox,
                lambda *_: None,
                subscribe=handlers.__setitem__,
                trust=trust,
            )
        )
    )
    await until(lambda: Channel.GALLERY in handlers and relay.requests > 0, 5, "the barrier to start")
    r = Rig(unit, relay, camera, outbox, handlers, trust)
    await r.deliver(
        AllowlistDelta(
            revision=1,
            upserts=[
                PlateEntry(plate="京A12340", holder="res-1042"),
                PlateEntry(
                    plate="沪AD12345",
                    holder="res-1203",
                    kind="visitor",
                    valid_from_ts=now_ms() - 60_000,
                    valid_until_ts=now_ms() + 60_000,
                ),
                PlateEntry(
                    plate="粤B55555",
                    holder="res-0001",
                    kind="visitor",
                    valid_from_ts=now_ms() - 7_200_000,
                    valid_until_ts=now_ms() - 3_600_000,
                ),
            ],
        )
    )
    yield r
    await cancel_and_wait(task)
    assert task.cancelled()  # the unit stops when told, without an error of its own
    await outbox.close()
    camera.close()
    relay.close()


async def test_allowed_plate_read_with_a_confusable_letter_opens_and_closes_after_the_car(rig: Rig) -> None:
    rig.camera.see("京A1234O")  # the camera read a letter O where the plate has a zero
    # the relay moves before the unit records its decision: wait for both
    await until(lambda: rig.relay.coil(BARRIER) and rig.unit.decisions, what="the barrier to go up")
    assert rig.unit.decisions[-1].subject_id == "res-1042" and rig.reasons() == ["resident_plate"]
    rig.relay.set_input(LOOP, True)  # the car drives onto the loop
    await until(lambda: rig.unit.vehicle_seen, 2, "the loop")
    await asyncio.sleep(1.3)  # well past open_s: a car is still under the barrier
    assert rig.relay.coil(BARRIER), "the barrier must not come down on a vehicle"
    rig.relay.set_input(LOOP, False)  # the car has passed
    t0 = time.monotonic()
    await until(lambda: not rig.relay.coil(BARRIER), 3, "the barrier to close")
    assert time.monotonic() - t0 >= 0.2  # after clear_s, not at once
    plate_reads = [m["body"] for m in await Sent(rig.outbox)("plate.read")]
    assert plate_reads[0]["plate"] == "京A12340" and plate_reads[0]["decision"] == "open"


async def test_timeout_closes_when_no_car_comes(rig: Rig) -> None:
    rig.camera.see("京A12340")
    await until(lambda: rig.relay.coil(BARRIER), what="up")
    await until(lambda: not rig.relay.coil(BARRIER), 3, "down after open_s")


@pytest.mark.parametrize(
    ("plate", "conf", "reason", "opens"),
    [
        ("沪AD12345", 0.95, "visitor_plate", True),  # visitor inside the window
        ("粤B55555", 0.95, "outside_validity", False),  # visitor window over
        ("苏E99999", 0.95, "unknown_plate", False),
        ("京A12340", 0.4, "low_confidence", False),
        ("XX", 0.95, "unreadable_plate", False),
    ],
)
async def test_decisions(rig: Rig, plate: str, conf: float, reason: str, opens: bool) -> None:
    rig.camera.see(plate, conf)
    await until(lambda: rig.reasons(), what="a decision")
    assert rig.reasons() == [reason]
    assert rig.relay.coil(BARRIER) is opens


async def test_allowlist_deltas_and_resync(rig: Rig) -> None:
    await rig.deliver(AllowlistDelta(revision=2, base_revision=1, deletes=["京A12340"]))
    await rig.deliver(AllowlistDelta(revision=4, base_revision=3, upserts=[PlateEntry(plate="京A12340", holder="x")]))
    assert rig.unit.allowlist.revision == 2 and rig.unit.allowlist.lookup("京A12340") is None
    events = [m["body"] for m in await Sent(rig.outbox)()]
    assert any(e.get("code") == "allowlist.resync" and e["details"]["revision"] == 2 for e in events)
    rig.camera.see("京A12340")
    await until(lambda: rig.reasons(), what="a decision")
    assert rig.reasons() == ["unknown_plate"] and not rig.relay.coil(BARRIER)


async def test_tcp_camera_reconnects() -> None:
    from edge.drivers.anpr import AnprSource
    from edge.drivers.config import TcpAnprConfig

    cam = TcpAnpr()
    src = AnprSource(TcpAnprConfig(type="tcp", host=cam.host, port=cam.port))
    await src.start()
    try:
        assert await asyncio.to_thread(cam.wait_client)
        cam.see("京A12345", 0.9)
        r = await asyncio.wait_for(src.read(), 3)
        assert (r.text, r.confidence) == ("京A12345", 0.9)
        cam.drop_clients()  # the camera reboots
        assert await asyncio.to_thread(cam.wait_client)
        cam.see("沪AD12345", 0.8)
        assert (await asyncio.wait_for(src.read(), 3)).text == "沪AD12345"
    finally:
        await src.close()
        cam.close()
