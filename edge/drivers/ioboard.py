"""The project's I/O board over USB serial (``protocol.serial_frame``, through a ``BoardLink``): named relays
and inputs, unsolicited input-change events, and a watchdog the board enforces (if the gateway stops kicking
it, the board drops its outputs to their safe levels: locks shut) and reports when contact returns."""

from __future__ import annotations

import asyncio
import contextlib

from edge.drivers.boardlink import BoardLink
from edge.drivers.io import IO, DriverError, IOBoardConfig, log
from protocol import serial_frame as sf


class IOBoardIO(IO):
    cfg: IOBoardConfig

    def __init__(self, cfg: IOBoardConfig) -> None:
        super().__init__(cfg)
        self.link = BoardLink(cfg.port, cfg.baud, cfg.timeout_s, on_event=self._on_event)
        self._kicker: asyncio.Task[None] | None = None
        self._input_events = 0
        self.safe_states = 0  # times the board reported its watchdog safe state
        self.board_log: list[str] = []  # log lines the board sent
        self.info = ""

    @property
    def errors(self) -> dict[str, int]:
        return self.link.errors

    async def start(self) -> None:
        await self.link.open()
        self.info = (await self.request(sf.OP_INFO)).decode(errors="replace")
        await self.read_inputs()
        if self.cfg.watchdog_s:
            ms = int(self.cfg.watchdog_s * 1000)
            await self.request(sf.OP_WATCHDOG_CONFIG, sf.u16(ms) + sf.u16(0))  # 0: the board's own safe levels
            self._kicker = asyncio.create_task(self._kick(self.cfg.watchdog_s / 3))

    async def close(self) -> None:
        if self._kicker:
            self._kicker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._kicker
        await self.link.close()

    async def _kick(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            with contextlib.suppress(DriverError):
                await self.request(sf.OP_WATCHDOG_KICK)

    def _on_event(self, op: int, payload: bytes) -> None:
        if op == sf.OP_INPUT_CHANGED:
            self._input_events += 1
            self._inputs_from(sf.get_u16(payload))
        elif op == sf.OP_SAFE_STATE:
            log.warning("I/O board entered its safe state (watchdog)")
            self.safe_states += 1
            self._outputs_from(sf.get_u16(payload))
        elif op == sf.OP_LOG:
            line = payload.decode("utf-8", "replace")
            self.board_log.append(line)
            log.info("I/O board says", extra={"line": line})

    def _inputs_from(self, bits: int) -> None:
        self._update_inputs({ch: bool(bits & (1 << ch)) for ch in self.cfg.inputs.values()})

    def _outputs_from(self, bits: int) -> None:
        for name, ch in self.cfg.outputs.items():
            self._outputs[name] = bool(bits & (1 << ch))

    async def request(self, op: int, payload: bytes = b"") -> bytes:
        return await self.link.request(op, payload)

    async def read_inputs(self) -> None:
        events_before = self._input_events
        data = await self.request(sf.OP_READ_INPUTS)
        if self._input_events == events_before:  # else an input event overtook this snapshot: it is newer
            self._inputs_from(sf.get_u16(data))
        self._outputs_from(sf.get_u16(data, 2))

    async def set(self, output: str, on: bool) -> None:
        ch = self._out(output)
        data = await self.request(sf.OP_SET_OUTPUTS, sf.u16(1 << ch) + sf.u16((1 << ch) if on else 0))
        self._outputs_from(sf.get_u16(data))

    async def pulse(self, output: str, seconds: float) -> None:
        ch = self._out(output)
        ms = max(1, min(0xFFFF, int(seconds * 1000)))
        data = await self.request(sf.OP_PULSE_OUTPUT, bytes([ch]) + sf.u16(ms))
        self._outputs_from(sf.get_u16(data))
        asyncio.get_running_loop().call_later(seconds, self._outputs.__setitem__, output, False)
