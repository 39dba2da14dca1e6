"""Household water meters on one Modbus RTU bus (one unit id each): input registers 0–1 the total volume in
litres (high word first), register 2 the flow in L/h as a signed 16-bit value (negative: reverse flow).

A meter's flow follows a household's day — showers in the morning and evening, a little use in the day, none
at night — unless the scenario sets a leak (a steady extra flow), a burst (a large flow) or reverse flow, or
takes the meter off the bus. Meter time runs ``clock_scale`` times faster than the wall clock, so a day of
readings takes minutes; the volume integrates the flow over meter time.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.modbus_rtu import RtuServer

READ_INPUT_REGISTERS = 4


@dataclass
class MeterState:
    unit_id: int
    litres: float = 0.0
    leak_lph: float = 0.0
    burst_lph: float = 0.0
    reverse_lph: float = 0.0
    alive: bool = True
    people: int = 3

    def usage_lph(self, hour: float) -> float:
        """The household's use at meter-time ``hour`` (0–24): two peaks, quiet nights."""
        if 0 <= hour % 24 < 5.5:
            return 0.0
        peak = 60 * self.people * (math.exp(-(((hour - 7.5) / 0.8) ** 2)) + 0.8 * math.exp(-(((hour - 20) / 1.2) ** 2)))
        return peak + (8.0 * self.people if 9 <= hour % 24 < 22 and int(hour * 6) % 3 == 0 else 0.0)

    def flow_lph(self, hour: float) -> float:
        return self.usage_lph(hour) + self.leak_lph + self.burst_lph - self.reverse_lph


class WaterMeterBus:
    def __init__(self, meters: int = 4, clock_scale: float = 1.0, start_hour: float = 0.0) -> None:
        # a meter off the bus answers with a Modbus exception; pymodbus would log each as an error
        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
        self.clock_scale, self.start_hour = clock_scale, start_hour
        self.meters = {i + 1: MeterState(i + 1) for i in range(meters)}
        self._t0 = time.monotonic()
        self._last = self._t0
        self._lock = threading.Lock()
        devices = []
        for uid in self.meters:
            regs = [SimData(0, count=4, values=0, datatype=DataType.REGISTERS)]
            bits = [SimData(0, count=1, values=False, datatype=DataType.BITS)]
            devices.append(
                SimDevice(id=uid, simdata=(bits, list(bits), regs, list(regs)), action=self._action_for(uid))
            )
        self.rtu = RtuServer(devices, "water meter bus")
        self.link, self.port = self.rtu.link, self.rtu.port

    def hour(self) -> float:
        """Meter time in hours since midnight of day 0."""
        return self.start_hour + (time.monotonic() - self._t0) * self.clock_scale / 3600

    def advance(self) -> None:
        """Integrate every meter's flow up to now."""
        with self._lock:
            now = time.monotonic()
            dt_h = (now - self._last) * self.clock_scale / 3600
            self._last = now
            h = self.hour()
            for m in self.meters.values():
                m.litres = max(0.0, m.litres + m.flow_lph(h) * dt_h)

    def _action_for(self, uid: int) -> Any:
        async def action(
            fc: int, start: int, address: int, count: int, regs: list[Any], values: list[Any] | None
        ) -> None:
            if fc != READ_INPUT_REGISTERS:
                return
            if not self.meters[uid].alive:
                raise ConnectionError(f"meter {uid} is off the bus")  # answered with a Modbus exception
            table = self.registers(uid)
            for i in range(count):
                regs[address - start + i] = table[address + i] if address + i < len(table) else 0

        return action

    def registers(self, uid: int) -> list[int]:
        self.advance()
        m = self.meters[uid]
        total = int(m.litres) & 0xFFFFFFFF
        flow = round(m.flow_lph(self.hour()))
        return [total >> 16, total & 0xFFFF, flow & 0xFFFF, 0]

    def close(self) -> None:
        self.rtu.close()
