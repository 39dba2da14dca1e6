"""Combustible gas: a detector read over Modbus (%LEL and status bits) or through its relay contacts; two
alarm levels with hysteresis; at the high level the configured outputs (gas shut-off valve, extraction fan)
switch on here, at once, without asking the cloud — and stay on (latched) until someone resets them with the
``gas-reset`` command once the air is clear. Detector fault, end of life and silence are reported.

| alarm key | when | severity |
|---|---|---|
| ``gas.<detector>.low`` | ≥ ``low_lel`` | major |
| ``gas.<detector>.high`` | ≥ ``high_lel`` (outputs switched) | critical |
| ``gas.<detector>.fault`` | the detector reports a fault, or does not answer for ``comm_timeout_s`` | major |
| ``gas.<detector>.end_of_life`` | the sensor element is spent | warning |
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from edge.drivers.build import build_io
from edge.drivers.io import IO, DriverError
from edge.drivers.modbus import bounded
from edge.units.alarms import AlarmSet
from edge.units.base import Unit, UnitContext
from edge.units.community_config import GasConfig, GasContacts, GasModbus
from protocol.messages import RelayState

log = logging.getLogger("civicedge.edge.gas")


class GasUnit(Unit):
    name = "gas"

    def __init__(self, cfg: GasConfig, io: IO | None = None) -> None:
        self.cfg = cfg
        self.io = io if io is not None else (build_io(cfg.io) if cfg.io is not None else None)
        self.lel: float | None = None
        self.level = "normal"  # normal / low / high
        self.tripped = False  # the high-level outputs are on
        self.fault = False
        self.end_of_life = False
        self._client: Any = None
        self._last_ok = time.monotonic()
        self._ctx: UnitContext | None = None
        self.alarms: AlarmSet | None = None

    async def run(self, ctx: UnitContext) -> None:
        self._ctx = ctx
        self.alarms = AlarmSet(ctx.outbox, f"gas.{self.cfg.detector}")
        ctx.register_command("gas-reset", self._cmd_reset)
        ctx.register_command("gas-status", self._cmd_status)
        if self.io is not None:
            await self.io.start()
        if isinstance(self.cfg.source, GasModbus):
            from edge.drivers.modbus import modbus_client

            self._client = modbus_client(self.cfg.source.plc, self.cfg.source.timeout_s)
            await self._client.connect()
        last_report = 0.0
        try:
            while True:
                ok = await self._poll()
                now = time.monotonic()
                if ok:
                    self._last_ok = now
                await self._evaluate(ok)
                if self.lel is not None and (ok and now - last_report >= self.cfg.report_s):
                    last_report = now
                    await ctx.outbox.put_reading(f"gas.{self.cfg.detector}.lel", self.lel, unit="%LEL")
                await asyncio.sleep(self.cfg.poll_s)
        finally:
            if self._client is not None:
                self._client.close()
            if self.io is not None:
                await self.io.close()

    # --- reading the detector ---------------------------------------------------------------------------

    async def _poll(self) -> bool:
        src = self.cfg.source
        if isinstance(src, GasContacts):
            assert self.io is not None
            low, high = self.io.input(src.low), self.io.input(src.high)
            self.fault = bool(src.fault and self.io.input(src.fault))
            # contacts give levels, not a concentration: report the threshold reached
            self.lel = self.cfg.high_lel if high else self.cfg.low_lel if low else 0.0
            return True
        from pymodbus.exceptions import ModbusException

        try:
            a = min(src.concentration_register, src.status_register)
            n = max(src.concentration_register, src.status_register) - a + 1
            rr = await bounded(self._client.read_input_registers(a, count=n, device_id=src.unit_id), src.timeout_s)
            if rr.isError() or len(rr.registers) < n:
                raise ConnectionError(str(rr))
        except (TimeoutError, ModbusException, ConnectionError, OSError) as exc:
            log.info("gas detector not answering", extra={"detector": self.cfg.detector, "error": str(exc)})
            return False
        regs = rr.registers
        status = regs[src.status_register - a]
        self.lel = round(regs[src.concentration_register - a] * src.scale, 1)
        self.fault = bool(status >> src.fault_bit & 1)
        self.end_of_life = bool(status >> src.end_of_life_bit & 1)
        return True

    # --- deciding -----------------------------------------------------------------------------------------

    async def _evaluate(self, ok: bool) -> None:
        assert self.alarms is not None
        cfg, a = self.cfg, self.alarms
        silent = not ok and time.monotonic() - self._last_ok > cfg.comm_timeout_s
        await a.set(
            "fault",
            self.fault or silent,
            "major",
            "gas detector not answering" if silent else "gas detector reports a fault",
            "gas detector working again",
        )
        await a.set("end_of_life", self.end_of_life, "warning", "gas sensor element at end of life: replace it")
        if not ok or self.lel is None or self.fault:
            return  # a faulty reading decides nothing (the outputs stay as they are)
        lel, h = self.lel, cfg.hysteresis_lel
        high = lel >= cfg.high_lel or (a.is_active("high") and lel > cfg.high_lel - h)
        low = lel >= cfg.low_lel or (a.is_active("low") and lel > cfg.low_lel - h)
        self.level = "high" if high else "low" if low else "normal"
        if high and not self.tripped:
            await self._switch(True, "gas_high")
        elif not high and self.tripped and not cfg.latch and not low:
            await self._switch(False, "gas_cleared")
        changed_low = await a.set(
            "low", low, "major", f"gas {lel:g} %LEL at {cfg.detector}", "gas below the low level", lel=lel
        )
        changed_high = await a.set(
            "high",
            high,
            "critical",
            f"gas {lel:g} %LEL at {cfg.detector}: " + ("outputs switched" if cfg.on_high else "evacuate"),
            "gas below the high level",
            lel=lel,
            outputs=list(cfg.on_high),
        )
        if (changed_low or changed_high) and self._ctx is not None:
            await self._ctx.outbox.put_reading(f"gas.{cfg.detector}.lel", lel, unit="%LEL")

    async def _switch(self, on: bool, reason: str) -> None:
        """The valve and fan outputs: on a failure the alarm says so and the next poll tries again."""
        assert self._ctx is not None and self.alarms is not None
        if self.io is None or not self.cfg.on_high:
            self.tripped = on
            return
        try:
            for out in self.cfg.on_high:
                await self.io.set(out, on)
        except DriverError as exc:
            await self.alarms.set("output_fault", True, "critical", f"gas valve/fan output failed: {exc}"[:500])
            return
        self.tripped = on
        await self.alarms.set("output_fault", False, "critical", "", "gas outputs answering again")
        for out in self.cfg.on_high:
            await self._ctx.outbox.put(RelayState(relay=out, state="on" if on else "off", reason=reason))

    # --- commands -----------------------------------------------------------------------------------------

    async def _cmd_reset(self, args: dict[str, Any]) -> dict[str, Any]:
        from edge.commands import CommandError

        if self.level != "normal" or self.fault:
            raise CommandError(f"not reset: gas still at {self.lel} %LEL ({self.level}); ventilate first")
        if self.tripped:
            await self._switch(False, "reset")
        return {"reset": True, "outputs": list(self.cfg.on_high)}

    async def _cmd_status(self, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "detector": self.cfg.detector,
            "lel": self.lel,
            "level": self.level,
            "tripped": self.tripped,
            "fault": self.fault,
            "end_of_life": self.end_of_life,
        }
