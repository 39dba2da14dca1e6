"""A Modbus RTU relay module (the common 8-channel DIN-rail kind) on one end of a serial link: coils 0–7 are
the relays, discrete inputs 0–7 the opto inputs. pymodbus's server runs in its own thread and event loop; the
module's state lives here (``coils``, ``inputs``, ``history``) and is served through the server's action hook."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.serial_link import SerialLink

READ_DISCRETE_INPUTS, WRITE_COIL, WRITE_COILS = 2, 5, 15


class ModbusRelaySim:
    def __init__(self, unit_id: int = 1, channels: int = 8) -> None:
        self.link = SerialLink()
        self.port = self.link.b  # the gateway opens this end
        self.coils = [False] * channels
        self.inputs = [False] * channels
        self.history: list[tuple[float, int, bool]] = []
        self.requests = 0
        bits = [SimData(0, count=channels, values=False, datatype=DataType.BITS)]
        regs = [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)]
        self.device = SimDevice(id=unit_id, simdata=(bits, list(bits), regs, list(regs)), action=self._action)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="modbus-relay-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(5):
            raise RuntimeError("the Modbus relay simulator did not start")

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        current_registers: list[Any],
        set_values: list[Any] | None,
    ) -> None:
        self.requests += 1
        if function_code == READ_DISCRETE_INPUTS:
            current_registers[0] = sum(1 << i for i, on in enumerate(self.inputs) if on)
        elif function_code in (WRITE_COIL, WRITE_COILS) and set_values is not None:
            now = time.monotonic()
            for i, v in enumerate(set_values):
                ch = address + i
                if 0 <= ch < len(self.coils) and self.coils[ch] != bool(v):
                    self.coils[ch] = bool(v)
                    self.history.append((now, ch, bool(v)))

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self.server = ModbusSerialServer(self.device, port=self.link.a, baudrate=9600)
            await self.server.serve_forever(background=True)
            self._ready.set()
            self._stopped = asyncio.Event()
            await self._stopped.wait()
            await self.server.shutdown()  # type: ignore[no-untyped-call]

        self._loop.run_until_complete(main())

    def coil(self, ch: int) -> bool:
        return self.coils[ch]

    def set_input(self, ch: int, on: bool) -> None:
        self.inputs[ch] = on

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(5)
        self.link.close()
