"""A Modbus RTU relay module: coils are outputs, discrete inputs are inputs (polled: Modbus has no events).
Pulses are timed here (most modules have no pulse command); a module that stops answering is a DriverError."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any

from edge.drivers.config import ModbusRtu, ModbusTcp
from edge.drivers.io import IO, DriverError, ModbusConfig

POLL_S = 0.1
RETRIES = 1  # a relay write is worth one retry


def modbus_client(transport: ModbusRtu | ModbusTcp, timeout_s: float, retries: int = 0) -> Any:
    """A pymodbus asyncio client for either transport (a poller leaves retries to its next poll)."""
    from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

    if isinstance(transport, ModbusRtu):
        return AsyncModbusSerialClient(
            transport.port, baudrate=transport.baud, timeout=timeout_s, retries=retries, reconnect_delay=0.2
        )
    return AsyncModbusTcpClient(
        transport.host, port=transport.port, timeout=timeout_s, retries=retries, reconnect_delay=0.2
    )


async def bounded(call: Awaitable[Any], client_timeout_s: float, retries: int = 0) -> Any:
    """One request, bounded at twice what the client itself may take (``client_timeout_s`` per attempt, ``retries``
    more attempts) plus a second: a request the client never settles (neither a reply
    nor its timeout, e.g. caught in a reconnect) is a ``TimeoutError`` like a silent device, instead of a poll loop
    that waits for ever, holding the bus, while the watchdog that would report it never runs. (``asyncio.timeout``,
    not ``wait_for``: see ``edge.tasks``.)"""
    async with asyncio.timeout(client_timeout_s * (1 + retries) * 2 + 1.0):
        return await call


class ModbusIO(IO):
    cfg: ModbusConfig

    def __init__(self, cfg: ModbusConfig) -> None:
        super().__init__(cfg)
        self._client: Any = None
        self._poller: asyncio.Task[None] | None = None
        self._offs: dict[str, asyncio.TimerHandle] = {}
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        rtu = ModbusRtu(type="rtu", port=self.cfg.port, baud=self.cfg.baud)
        self._client = modbus_client(rtu, self.cfg.timeout_s, retries=RETRIES)
        if not await self._client.connect():
            raise DriverError(f"Modbus module at {self.cfg.port}: cannot open the port")
        if self.cfg.inputs:
            await self._poll_once()
            self._poller = asyncio.create_task(self._poll())

    async def close(self) -> None:
        if self._poller:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        for h in self._offs.values():
            h.cancel()
        if self._client is not None:
            self._client.close()

    async def _call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        from pymodbus.exceptions import ModbusException

        async with self._lock:
            try:
                rr = await bounded(fn(*args, device_id=self.cfg.unit_id, **kw), self.cfg.timeout_s, retries=RETRIES)
            except (ModbusException, TimeoutError) as exc:
                raise DriverError(f"Modbus module {self.cfg.unit_id} at {self.cfg.port}: {what}: {exc}") from None
        if rr.isError():
            raise DriverError(f"Modbus module {self.cfg.unit_id}: {what} refused: {rr}")
        return rr

    async def _poll_once(self) -> None:
        lo, hi = min(self.cfg.inputs.values()), max(self.cfg.inputs.values())
        rr = await self._call("read inputs", self._client.read_discrete_inputs, lo, count=hi - lo + 1)
        self._update_inputs({lo + i: bool(b) for i, b in enumerate(rr.bits[: hi - lo + 1])})

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            with contextlib.suppress(DriverError):
                await self._poll_once()

    async def set(self, output: str, on: bool) -> None:
        coil = self._out(output)
        if output in self._offs:
            self._offs.pop(output).cancel()
        await self._call("write coil", self._client.write_coil, coil, on)
        self._outputs[output] = on

    async def pulse(self, output: str, seconds: float) -> None:
        await self.set(output, True)

        def off() -> None:
            self._offs.pop(output, None)
            task = asyncio.ensure_future(self._off_quietly(output))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._offs[output] = asyncio.get_running_loop().call_later(seconds, off)

    async def _off_quietly(self, output: str) -> None:
        with contextlib.suppress(DriverError):
            await self.set(output, False)
