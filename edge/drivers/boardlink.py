"""A serial link to one of the project's boards (``protocol.serial_frame``): requests matched to responses by
sequence number, unsolicited events delivered to a callback on the event loop, damaged frames counted."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from edge.drivers.io import DriverError
from protocol import serial_frame as sf

log = logging.getLogger("civicedge.edge.boardlink")
EventHandler = Callable[[int, bytes], None]  # (op, payload)


class BoardLink:
    def __init__(self, port: str, baud: int = 115200, timeout_s: float = 0.5, on_event: EventHandler | None = None):
        self.port, self.baud, self.timeout_s = port, baud, timeout_s
        self.on_event = on_event
        self._ser: Any = None
        self._seq = 0
        self._pending: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: dict[str, int] = {}
        self.frames = 0

    async def open(self) -> None:
        import serial

        try:
            self._ser = serial.Serial(self.port, self.baud, timeout=0.05)
        except serial.SerialException as exc:
            raise DriverError(f"board at {self.port}: {exc}") from None
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._reader, name=f"board-{self.port}", daemon=True)
        self._thread.start()

    async def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(1)
        if self._ser is not None:
            self._ser.close()

    def _reader(self) -> None:
        reader = sf.FrameReader()
        while not self._stop.is_set():
            try:
                chunk = self._ser.read(256)
            except Exception as exc:
                log.warning("board read failed", extra={"port": self.port, "error": str(exc)})
                return
            if chunk:
                for frame in reader.feed(chunk):
                    self._loop.call_soon_threadsafe(self._on_frame, *frame)
                self.errors = dict(reader.errors)

    def _on_frame(self, kind: int, seq: int, op: int, payload: bytes) -> None:
        self.frames += 1
        if kind in (sf.KIND_RSP, sf.KIND_NAK):
            fut = self._pending.pop(seq, None)
            if fut is not None and not fut.done():
                fut.set_result((kind, payload))
        elif kind == sf.KIND_EVT and self.on_event is not None:
            self.on_event(op, payload)

    async def request(self, op: int, payload: bytes = b"") -> bytes:
        self._seq = (self._seq + 1) & 0xFF
        seq = self._seq
        fut: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._pending[seq] = fut
        try:
            self._ser.write(sf.encode_frame(sf.KIND_REQ, seq, op, payload))
            async with asyncio.timeout(self.timeout_s):
                kind, data = await fut
        except TimeoutError:
            raise DriverError(f"board at {self.port} did not answer op 0x{op:02x}") from None
        except OSError as exc:
            raise DriverError(f"board at {self.port}: {exc}") from None
        finally:
            self._pending.pop(seq, None)
        if kind == sf.KIND_NAK:
            raise DriverError(f"board refused op 0x{op:02x} (code {data[0] if data else '?'})")
        return data
