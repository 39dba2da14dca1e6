"""The project's I/O board over USB serial (``protocol.serial_frame``): requests matched to responses by
sequence number, unsolicited input-change events, and a watchdog the board enforces (if the gateway stops
kicking it, the board drops its outputs to the safe state: locks shut)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from edge.drivers.io import IO, DriverError, IOBoardConfig, log
from protocol import serial_frame as sf


class IOBoardIO(IO):
    cfg: IOBoardConfig

    def __init__(self, cfg: IOBoardConfig) -> None:
        super().__init__(cfg)
        self._ser: Any = None
        self._seq = 0
        self._pending: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._kicker: asyncio.Task[None] | None = None
        self.errors: dict[str, int] = {}
        self._input_events = 0
        self.safe_states = 0  # times the board reported its watchdog safe state
        self.board_log: list[str] = []  # log lines the board sent
        self.info = ""

    async def start(self) -> None:
        import serial

        try:
            self._ser = serial.Serial(self.cfg.port, self.cfg.baud, timeout=0.05)
        except serial.SerialException as exc:
            raise DriverError(f"I/O board at {self.cfg.port}: {exc}") from None
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._reader, name="ioboard-reader", daemon=True)
        self._thread.start()
        self.info = (await self.request(sf.OP_INFO)).decode(errors="replace")
        await self.read_inputs()
        if self.cfg.watchdog_s:
            ms = int(self.cfg.watchdog_s * 1000)
            await self.request(sf.OP_WATCHDOG_CONFIG, sf.u16(ms) + sf.u16(0))
            self._kicker = asyncio.create_task(self._kick(self.cfg.watchdog_s / 3))

    async def close(self) -> None:
        if self._kicker:
            self._kicker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._kicker
        self._stop.set()
        if self._thread:
            self._thread.join(1)
        if self._ser is not None:
            self._ser.close()

    async def _kick(self, period: float) -> None:
        while True:
            await asyncio.sleep(period)
            with contextlib.suppress(DriverError):
                await self.request(sf.OP_WATCHDOG_KICK)

    def _reader(self) -> None:
        reader = sf.FrameReader()
        while not self._stop.is_set():
            try:
                chunk = self._ser.read(256)
            except Exception as exc:
                log.warning("I/O board read failed", extra={"error": str(exc)})
                return
            if chunk:
                for frame in reader.feed(chunk):
                    self._loop.call_soon_threadsafe(self._on_frame, *frame)
                self.errors = dict(reader.errors)

    def _on_frame(self, kind: int, seq: int, op: int, payload: bytes) -> None:
        if kind in (sf.KIND_RSP, sf.KIND_NAK):
            fut = self._pending.pop(seq, None)
            if fut is not None and not fut.done():
                fut.set_result((kind, payload))
        elif kind == sf.KIND_EVT and op == sf.OP_INPUT_CHANGED:
            self._input_events += 1
            self._inputs_from(sf.get_u16(payload))
        elif kind == sf.KIND_EVT and op == sf.OP_SAFE_STATE:
            log.warning("I/O board entered its safe state (watchdog)")
            self.safe_states += 1
            self._outputs_from(sf.get_u16(payload))
        elif kind == sf.KIND_EVT and op == sf.OP_LOG:
            line = payload.decode("utf-8", "replace")
            self.board_log.append(line)
            log.info("I/O board says", extra={"line": line})

    def _inputs_from(self, bits: int) -> None:
        self._update_inputs({ch: bool(bits & (1 << ch)) for ch in self.cfg.inputs.values()})

    def _outputs_from(self, bits: int) -> None:
        for name, ch in self.cfg.outputs.items():
            self._outputs[name] = bool(bits & (1 << ch))

    async def request(self, op: int, payload: bytes = b"") -> bytes:
        self._seq = (self._seq + 1) & 0xFF
        seq = self._seq
        fut: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._pending[seq] = fut
        try:
            self._ser.write(sf.encode_frame(sf.KIND_REQ, seq, op, payload))
            async with asyncio.timeout(self.cfg.timeout_s):
                kind, data = await fut
        except TimeoutError:
            raise DriverError(f"I/O board at {self.cfg.port} did not answer op 0x{op:02x}") from None
        except OSError as exc:
            raise DriverError(f"I/O board at {self.cfg.port}: {exc}") from None
        finally:
            self._pending.pop(seq, None)
        if kind == sf.KIND_NAK:
            raise DriverError(f"I/O board refused op 0x{op:02x} (code {data[0] if data else '?'})")
        return data

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
