"""Household water meters read over Modbus RTU (total volume and signed flow) or from pulse outputs on inputs.
Every meter-hour each meter reports its consumption (``water.<meter>.hourly_l``, tagged with the household),
its total and its flow; the analysis runs here, per meter, so a leak is caught while the link is down:

| alarm key | when | severity |
|---|---|---|
| ``water.<meter>.leak`` | flow never at or below ``leak_lph`` for ``leak_hours`` whole hours in a row | major |
| ``water.<meter>.burst`` | flow above ``burst_lph`` for ``burst_s`` | critical |
| ``water.<meter>.reverse`` | flow backwards beyond ``reverse_lph`` | minor |
| ``water.<meter>.silent`` | the meter has not answered for ``silent_s`` | minor |

A running toilet or a dripping pipe keeps even the night's minimum flow up: that is the leak test. Times
are meter time (``clock_scale`` > 1 in simulations only).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from edge.drivers.build import build_io
from edge.drivers.io import IO
from edge.drivers.modbus import bounded
from edge.units.alarms import AlarmSet
from edge.units.base import Unit, UnitContext
from edge.units.community_config import Meter, MeterModbus, MeterPulse, WaterConfig

log = logging.getLogger("civicedge.edge.water")


@dataclass
class MeterView:
    id: str
    cfg: Meter
    litres: float | None = None
    flow_lph: float = 0.0
    hour_start_l: float | None = None
    hour_min_lph: float | None = None
    leak_hours: int = 0
    burst_since: float | None = None
    last_ok: float = field(default_factory=time.monotonic)
    pulses: int = 0
    pulse_state: bool = False
    pulse_times: list[float] = field(default_factory=list)


class WaterUnit(Unit):
    name = "water"

    def __init__(self, cfg: WaterConfig, io: IO | None = None) -> None:
        self.cfg = cfg
        self.io = io if io is not None else (build_io(cfg.io) if cfg.io is not None else None)
        self.meters = {mid: MeterView(mid, m) for mid, m in cfg.meters.items()}
        self._clients: dict[tuple[Any, ...], Any] = {}
        self._t0 = time.monotonic()
        self.hours = 0  # meter-hours completed (their readings committed)
        self.alarms: AlarmSet | None = None
        self._ctx: UnitContext | None = None

    def meter_s(self) -> float:
        """Meter time in seconds since the unit started."""
        return (time.monotonic() - self._t0) * self.cfg.clock_scale

    async def run(self, ctx: UnitContext) -> None:
        self._ctx = ctx
        self._t0 = time.monotonic()  # meter time starts with the unit
        self.alarms = AlarmSet(ctx.outbox, "water")
        ctx.register_command("water-status", self._cmd_status)
        if self.io is not None:
            await self.io.start()
        try:
            tasks = [asyncio.create_task(self._pulses())] if self.io is not None else []
            next_hour = self.cfg.report_s
            while True:
                for m in self.meters.values():
                    await self._read(m)
                    await self._analyse(m)
                if self.meter_s() >= next_hour:
                    next_hour += self.cfg.report_s
                    await self._hour()
                await asyncio.sleep(self.cfg.poll_s / self.cfg.clock_scale)
        finally:
            for t in tasks:
                t.cancel()
            for c in self._clients.values():
                c.close()
            if self.io is not None:
                await self.io.close()

    # --- reading ------------------------------------------------------------------------------------------

    async def _client(self, src: MeterModbus) -> Any:
        from edge.drivers.modbus import modbus_client

        key = (src.plc.type, getattr(src.plc, "port", None), getattr(src.plc, "host", None))
        if key not in self._clients:  # meters on one bus share its client
            c = self._clients[key] = modbus_client(src.plc, src.timeout_s)
            await c.connect()
        return self._clients[key]

    async def _read(self, m: MeterView) -> None:
        src = m.cfg.source
        if isinstance(src, MeterPulse):
            return  # counted by _pulses
        from pymodbus.exceptions import ModbusException

        client = await self._client(src)
        try:
            rr = await bounded(
                client.read_input_registers(src.volume_register, count=3, device_id=src.unit_id), src.timeout_s
            )
            if rr.isError() or len(rr.registers) < 3:
                raise ConnectionError(str(rr))
        except (TimeoutError, ModbusException, ConnectionError, OSError) as exc:
            log.debug("meter not answering", extra={"meter": m.id, "error": str(exc)})
            return
        r = rr.registers
        m.litres = float(r[0] << 16 | r[1])
        flow = r[2] - 0x10000 if r[2] & 0x8000 else r[2]
        m.flow_lph = float(flow)
        m.last_ok = time.monotonic()

    async def _pulses(self) -> None:
        """Pulse meters: count closings; flow from the pulses of the last meter-minutes."""
        assert self.io is not None
        while True:
            now = time.monotonic()
            for m in self.meters.values():
                src = m.cfg.source
                if not isinstance(src, MeterPulse):
                    continue
                level = self.io.input(src.input)
                if level and not m.pulse_state:
                    m.pulses += 1
                    m.pulse_times.append(now)
                m.pulse_state = level
                m.litres = m.pulses * src.litres_per_pulse
                window = 300 / self.cfg.clock_scale  # five meter-minutes
                m.pulse_times = [t for t in m.pulse_times if now - t <= window]
                m.flow_lph = len(m.pulse_times) * src.litres_per_pulse * 3600 / 300
                m.last_ok = now
            await asyncio.sleep(0.01)

    # --- analysis ------------------------------------------------------------------------------------------

    async def _analyse(self, m: MeterView) -> None:
        assert self.alarms is not None
        cfg, a = self.cfg, self.alarms
        silent_for = (time.monotonic() - m.last_ok) * cfg.clock_scale
        await a.set(
            f"{m.id}.silent",
            silent_for > cfg.silent_s,
            "minor",
            f"water meter {m.id} ({m.cfg.household}) not answering",
            "meter answering again",
            household=m.cfg.household,
        )
        if m.litres is None or silent_for > cfg.poll_s * 3:
            return
        if m.hour_start_l is None:
            m.hour_start_l = m.litres
        m.hour_min_lph = m.flow_lph if m.hour_min_lph is None else min(m.hour_min_lph, m.flow_lph)
        now_s = self.meter_s()
        if m.flow_lph > cfg.burst_lph:
            m.burst_since = m.burst_since if m.burst_since is not None else now_s
        else:
            m.burst_since = None
        burst = m.burst_since is not None and now_s - m.burst_since >= cfg.burst_s
        await a.set(
            f"{m.id}.burst",
            burst or (a.is_active(f"{m.id}.burst") and m.flow_lph > cfg.burst_lph * 0.8),
            "critical",
            f"water meter {m.id} ({m.cfg.household}): {m.flow_lph:.0f} L/h, a burst pipe?",
            "flow back to normal",
            household=m.cfg.household,
            flow_lph=m.flow_lph,
        )
        await a.set(
            f"{m.id}.reverse",
            m.flow_lph < -cfg.reverse_lph,
            "minor",
            f"water meter {m.id} ({m.cfg.household}): reverse flow {-m.flow_lph:.0f} L/h",
            "flow forwards again",
            household=m.cfg.household,
        )

    async def _hour(self) -> None:
        """A meter-hour ended: consumption readings, and the continuous-flow (leak) check."""
        assert self._ctx is not None and self.alarms is not None
        ob, cfg = self._ctx.outbox, self.cfg
        for m in self.meters.values():
            if m.litres is None or m.hour_start_l is None:
                continue
            tags = {"household": m.cfg.household}
            used = max(0.0, m.litres - m.hour_start_l)
            await ob.put_reading(f"water.{m.id}.hourly_l", used, unit="L", tags=tags)
            await ob.put_reading(f"water.{m.id}.volume_l", m.litres, unit="L", tags=tags)
            await ob.put_reading(f"water.{m.id}.flow_lph", m.flow_lph, unit="L/h", tags=tags)
            if m.hour_min_lph is not None:
                await ob.put_reading(f"water.{m.id}.min_flow_lph", m.hour_min_lph, unit="L/h", tags=tags)
                m.leak_hours = m.leak_hours + 1 if m.hour_min_lph > cfg.leak_lph else 0
            await self.alarms.set(
                f"{m.id}.leak",
                m.leak_hours >= cfg.leak_hours,
                "major",
                f"water meter {m.id} ({m.cfg.household}): water has not stopped flowing for {m.leak_hours} h "
                f"(lowest {m.hour_min_lph or 0:.0f} L/h), a leak?",
                "the flow stopped: no leak",
                household=m.cfg.household,
                min_flow_lph=m.hour_min_lph,
            )
            m.hour_start_l, m.hour_min_lph = m.litres, None
        self.hours += 1

    async def _cmd_status(self, args: dict[str, Any]) -> dict[str, Any]:
        assert self.alarms is not None
        return {
            mid: {
                "household": m.cfg.household,
                "litres": m.litres,
                "flow_lph": m.flow_lph,
                "leak_hours": m.leak_hours,
                "alarms": sorted(k for k in self.alarms.active if k.startswith(f"water.{mid}.")),
            }
            for mid, m in self.meters.items()
        }
