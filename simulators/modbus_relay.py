"""A Modbus RTU relay module (the common 8-channel DIN-rail kind) on one end of a serial link: coils 0–7 are
the relays, discrete inputs 0–7 the opto inputs. pymodbus's server runs in its own thread and event loop; the
module's state lives here (``coils``, ``inputs``, ``history``) and is served through the server's action hook."""

from __future__ import annotations

import time
from typing import Any

from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.modbus_rtu import RtuServer

READ_DISCRETE_INPUTS, WRITE_COIL, WRITE_COILS = 2, 5, 15


class ModbusRelaySim:
    def __init__(self, unit_id: int = 1, channels: int = 8) -> None:
        self.coils = [False] * channels
        self.inputs = [False] * channels
        self.history: list[tuple[float, int, bool]] = []
        self.requests = 0
        bits = [SimData(0, count=channels, values=False, datatype=DataType.BITS)]
        regs = [SimData(0, count=1, values=0, datatype=DataType.REGISTERS)]
        self.device = SimDevice(id=unit_id, simdata=(bits, list(bits), regs, list(regs)), action=self._action)
        self.rtu = RtuServer(self.device, "Modbus relay")
        self.link, self.port = self.rtu.link, self.rtu.port  # the gateway opens this end

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

    def coil(self, ch: int) -> bool:
        return self.coils[ch]

    def set_input(self, ch: int, on: bool) -> None:
        self.inputs[ch] = on

    def close(self) -> None:
        self.rtu.close()
