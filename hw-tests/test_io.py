"""Relays and inputs: the project's I/O board (serial frames, watchdog) and a Modbus RTU relay module, through
the same drivers the gateway units use."""

from __future__ import annotations

import asyncio
import time

import pytest

from edge.drivers.config import IOBoardConfig, ModbusConfig
from edge.drivers.ioboard import IOBoardIO
from edge.drivers.modbus import ModbusIO


async def _wait(cond, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if v := cond():
            return v
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.hardware("ioboard")
async def test_ioboard_answers_switches_and_falls_safe(bench) -> None:  # type: ignore[no-untyped-def]
    r = bench.rig.ioboard
    io = IOBoardIO(
        IOBoardConfig(
            type="ioboard",
            port=r.port,
            baud=r.baud,
            outputs={"relay": r.relay},
            inputs={} if r.loopback_input is None else {"loop": r.loopback_input},
            watchdog_s=1.0,
        )
    )
    await io.start()
    try:
        assert io.info, "the board did not identify itself"
        await io.set("relay", True)
        assert io.output("relay") is True
        if bench.simulated:
            assert bench.sims["ioboard"].output(r.relay)
        if r.loopback_input is not None:  # the relay's contact is wired back to an input on this rig
            await _wait(lambda: io.input("loop"), 2, "the relay contact on the loopback input")
        await io.set("relay", False)
        # stop kicking the watchdog: the board drops its outputs to their safe levels and says so
        await io.set("relay", True)
        assert io._kicker is not None
        io._kicker.cancel()
        await _wait(lambda: io.safe_states, 5, "the board's watchdog safe state")
        assert io.output("relay") is False
    finally:
        await io.close()


@pytest.mark.hardware("modbus_relay")
async def test_modbus_relay_module_switches(bench) -> None:  # type: ignore[no-untyped-def]
    r = bench.rig.modbus_relay
    io = ModbusIO(
        ModbusConfig(type="modbus", port=r.port, baud=r.baud, unit_id=r.unit_id, outputs={"relay": r.coil}, inputs={})
    )
    await io.start()
    try:
        await io.set("relay", True)
        if bench.simulated:
            assert bench.sims["modbus_relay"].coils[r.coil]
        await io.pulse("relay", 0.2)
        await _wait(lambda: io.output("relay") is False, 3, "the pulse to end")
        if bench.simulated:
            assert not bench.sims["modbus_relay"].coils[r.coil]
    finally:
        await io.close()
