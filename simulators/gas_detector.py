"""A commercial combustible-gas detector on Modbus RTU: input register 0 is the concentration in 0.1 %LEL,
register 1 the status bits (bit 0 fault, bit 1 sensor end of life). ``lel``, ``fault`` and ``end_of_life``
are set by the test or the scenario; ``alive = False`` stops it answering."""

from __future__ import annotations

from typing import Any

from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.modbus_rtu import RtuServer

READ_INPUT_REGISTERS = 4


class GasDetectorSim:
    def __init__(self, unit_id: int = 1) -> None:
        self.lel = 0.0
        self.fault = False
        self.end_of_life = False
        self.reads = 0
        regs = [SimData(0, count=4, values=0, datatype=DataType.REGISTERS)]
        bits = [SimData(0, count=8, values=False, datatype=DataType.BITS)]
        self.device = SimDevice(id=unit_id, simdata=(bits, list(bits), regs, list(regs)), action=self._action)
        self.rtu = RtuServer(self.device, "gas detector")
        self.link, self.port = self.rtu.link, self.rtu.port  # the gateway opens this end

    @property
    def alive(self) -> bool:
        return not self.link.cut

    @alive.setter
    def alive(self, value: bool) -> None:
        self.link.cut = not value

    async def _action(
        self, fc: int, start: int, address: int, count: int, regs: list[Any], values: list[Any] | None
    ) -> None:
        if fc == READ_INPUT_REGISTERS:
            self.reads += 1
            table = {0: min(1000, round(self.lel * 10)), 1: int(self.fault) | int(self.end_of_life) << 1}
            for i in range(count):
                regs[address - start + i] = table.get(address + i, 0)

    def close(self) -> None:
        self.rtu.close()
