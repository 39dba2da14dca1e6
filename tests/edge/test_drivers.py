"""I/O drivers against simulated hardware: gpiozero's mock pins, the I/O board on a pty, a Modbus RTU relay
module (pymodbus server) on a pty pair."""

from __future__ import annotations

import asyncio
import time

import pytest

from edge.drivers.build import build_io
from edge.drivers.config import GpioConfig, IOBoardConfig
from edge.drivers.io import DriverError
from simulators.ioboard import IOBoardSim


async def next_change(io, timeout: float = 2.0):  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        return await io.changes.get()


async def test_gpio_pulse_and_inputs_on_mock_pins(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    Device.pin_factory = MockFactory()
    io = build_io(
        GpioConfig(
            type="gpio", outputs={"lock": 17}, inputs={"door_contact": 27, "fire": 22}, invert=["door_contact", "fire"]
        )
    )
    await io.start()
    try:
        lock_pin = Device.pin_factory.pin(17)
        await io.pulse("lock", 0.2)
        assert lock_pin.state
        deadline = time.monotonic() + 2
        while lock_pin.state and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        history = [(round(t, 3), s) for t, s in lock_pin.states]
        on = next(t for t, s in history if s)
        off = next(t for t, s in history if not s and t > on)
        assert off - on == pytest.approx(0.2, abs=0.08)
        # dry contacts to ground on pulled-up pins: idle high = inactive, closed to ground = active
        assert io.changes.empty() and not io.input("door_contact") and not io.input("fire")
        Device.pin_factory.pin(27).drive_low()
        assert await next_change(io) == ("door_contact", True)
        Device.pin_factory.pin(22).drive_low()
        assert await next_change(io) == ("fire", True)
        Device.pin_factory.pin(22).drive_high()
        assert await next_change(io) == ("fire", False)
        with pytest.raises(DriverError, match="no output named"):
            await io.pulse("siren", 1)
    finally:
        await io.close()
        Device.pin_factory.reset()


async def test_ioboard_pulse_timed_by_the_board_and_watchdog_safe_state() -> None:
    board = IOBoardSim()
    io = build_io(
        IOBoardConfig(type="ioboard", port=board.port, outputs={"lock": 2}, inputs={"loop": 3}, watchdog_s=0.3)
    )
    try:
        await io.start()
        assert "ioboard-sim" in io.info  # type: ignore[attr-defined]
        await io.pulse("lock", 0.25)
        assert board.output(2) and io.output("lock")
        await asyncio.sleep(0.4)
        assert board.pulses(2) == [pytest.approx(0.25, abs=0.08)]
        board.set_input(3, True)
        assert await next_change(io) == ("loop", True)
        await io.set("lock", True)
        await asyncio.sleep(0.5)  # the gateway keeps kicking: no safe state
        assert board.output(2)
    finally:
        await io.close()  # stops kicking
    await asyncio.sleep(0.5)
    assert not board.output(2), "the board must drop its outputs when the gateway stops kicking"
    board.close()


async def test_ioboard_silence_is_a_driver_error() -> None:
    board = IOBoardSim()
    io = build_io(IOBoardConfig(type="ioboard", port=board.port, outputs={"lock": 0}, timeout_s=0.2, watchdog_s=None))
    await io.start()
    board.alive = False
    with pytest.raises(DriverError, match="did not answer"):
        await io.pulse("lock", 1)
    await io.close()
    board.close()


async def test_missing_port_names_the_problem() -> None:
    io = build_io(IOBoardConfig(type="ioboard", port="/dev/ttyNOPE", outputs={"lock": 0}))
    with pytest.raises(DriverError, match="/dev/ttyNOPE"):
        await io.start()


async def test_modbus_relay_module_coils_and_polled_inputs() -> None:
    from edge.drivers.config import ModbusConfig
    from simulators.modbus_relay import ModbusRelaySim

    sim = ModbusRelaySim(unit_id=3)
    io = build_io(ModbusConfig(type="modbus", port=sim.port, unit_id=3, outputs={"barrier": 1}, inputs={"loop": 4}))
    try:
        await io.start()
        await io.pulse("barrier", 0.3)
        assert sim.coil(1)
        await asyncio.sleep(0.5)
        assert not sim.coil(1)
        on, off = [t for t, ch, _ in sim.history if ch == 1][:2]
        assert off - on == pytest.approx(0.3, abs=0.1)
        sim.set_input(4, True)
        assert await next_change(io) == ("loop", True)
    finally:
        await io.close()
        sim.close()
    sim2 = ModbusRelaySim(unit_id=3)
    wrong = build_io(ModbusConfig(type="modbus", port=sim2.port, unit_id=9, outputs={"x": 0}, timeout_s=0.2))
    try:
        await wrong.start()
        with pytest.raises(DriverError):
            await wrong.set("x", True)  # nobody answers as unit 9
    finally:
        await wrong.close()
        sim2.close()
