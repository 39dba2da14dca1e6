"""The I/O board firmware running under the MicroPython unix port, driven by the gateway's own I/O board
driver over a serial link — exactly as with the board on USB serial."""

from __future__ import annotations
from tests.waits import until

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from edge.drivers.config import IOBoardConfig
from edge.drivers.build import build_io
from simulators.firmware import FirmwareBoard



@pytest.fixture
def board(micropython: Any) -> Iterator[FirmwareBoard]:
    b = FirmwareBoard("ioboard", {"safe": [0, 1, 0, 0, 0, 0, 0, 0]})  # relay 0 a lock, relay 1 a fire-door hold
    yield b
    b.close()


async def test_pulse_inputs_and_watchdog_safe_state(board: FirmwareBoard) -> None:
    io = build_io(
        IOBoardConfig(type="ioboard", port=board.port, outputs={"lock": 0, "fire_door": 1},
                      inputs={"door_contact": 2}, watchdog_s=0.4)
    )
    await io.start()
    try:
        assert io.info.startswith("ioboard 1.0")  # type: ignore[attr-defined]
        await io.pulse("lock", 0.3)
        t_on = time.monotonic()
        await until(lambda: board.outputs()[0] == 1, 1, "the relay on")
        await until(lambda: board.outputs()[0] == 0, 2, "the relay off")
        assert 0.2 < time.monotonic() - t_on < 0.6  # timed by the board
        board.set_input(2, True)
        async with asyncio.timeout(2):
            assert await io.changes.get() == ("door_contact", True)  # debounced, then reported unsolicited
        await io.set("lock", True)
        await until(lambda: board.outputs()[0] == 1, 1, "the lock released")
    finally:
        await io.close()  # the gateway goes silent
    await until(lambda: board.outputs()[:2] == [0, 1], 3, "the safe state: lock locked, fire door released")
    again = build_io(IOBoardConfig(type="ioboard", port=board.port, outputs={"lock": 0}, watchdog_s=None))
    await again.start()  # contact returns
    try:
        await until(lambda: again.board_log, 2, "the board to say it was in its safe state")  # type: ignore[attr-defined]
        assert "safe state" in again.board_log[0]  # type: ignore[attr-defined]
    finally:
        await again.close()


async def test_unknown_and_malformed_requests(board: FirmwareBoard) -> None:
    import serial

    from protocol import serial_frame as sf

    s = serial.Serial(board.port, 115200, timeout=0.5)
    s.write(b"\x01\x02\x03\x00")  # noise
    s.write(sf.encode_frame(sf.KIND_REQ, 9, 0x7E))  # an op the board does not know
    s.write(sf.encode_frame(sf.KIND_REQ, 10, sf.OP_PULSE_OUTPUT, b"\x09"))  # too short
    r = sf.FrameReader()
    frames: list[tuple[int, int, int, bytes]] = []
    deadline = time.monotonic() + 3
    while len(frames) < 2 and time.monotonic() < deadline:
        frames += r.feed(s.read(64))
    s.close()
    assert frames == [(sf.KIND_NAK, 9, 0x7E, bytes([sf.NAK_BAD_OP])), (sf.KIND_NAK, 10, sf.OP_PULSE_OUTPUT, bytes([sf.NAK_BAD_ARGS]))]
    assert board.proc.poll() is None, board.console()
