"""Number-plate cameras (ANPR): the camera recognises the plate itself and sends one text line per vehicle,
``PLATE,<plate>,<confidence 0..1>`` (most vendors offer such a line mode over RS-485/RS-232 or a TCP socket).
Lines that do not parse are counted and skipped; a dropped TCP link is reopened with a backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Any

from edge.drivers.config import AnprConfig, SerialAnprConfig, TcpAnprConfig
from edge.drivers.io import DriverError

log = logging.getLogger("civicedge.edge.anpr")
MAX_LINE = 256


@dataclass(frozen=True, slots=True)
class PlateReading:
    text: str
    confidence: float


def parse_line(line: bytes) -> PlateReading | None:
    try:
        parts = line.decode("utf-8").strip().split(",")
    except UnicodeDecodeError:
        return None
    if len(parts) != 3 or parts[0] != "PLATE" or not parts[1]:
        return None
    try:
        conf = float(parts[2])
    except ValueError:
        return None
    return PlateReading(parts[1][:32], min(1.0, max(0.0, conf)))


class AnprSource:
    def __init__(self, cfg: SerialAnprConfig | TcpAnprConfig) -> None:
        self.cfg = cfg
        self.readings: asyncio.Queue[PlateReading] = asyncio.Queue()
        self.bad_lines = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ser: Any = None

    def _line(self, line: bytes) -> None:
        r = parse_line(line)
        if r is None:
            self.bad_lines += 1
            log.warning("ANPR line not understood", extra={"line": line[:80].decode("utf-8", "replace")})
        else:
            self.readings.put_nowait(r)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if isinstance(self.cfg, SerialAnprConfig):
            import serial

            try:
                self._ser = serial.Serial(self.cfg.port, self.cfg.baud, timeout=0.1)
            except serial.SerialException as exc:
                raise DriverError(f"ANPR camera at {self.cfg.port}: {exc}") from None

            def reader() -> None:
                buf = b""
                while not self._stop.is_set():
                    try:
                        buf += self._ser.read(256)
                    except Exception:
                        return
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        loop.call_soon_threadsafe(self._line, line)
                    buf = buf[-MAX_LINE:]

            self._thread = threading.Thread(target=reader, name="anpr-serial", daemon=True)
            self._thread.start()
        else:
            self._task = asyncio.create_task(self._tcp(self.cfg))

    async def _tcp(self, cfg: TcpAnprConfig) -> None:
        backoff = 0.5
        while True:
            try:
                reader, writer = await asyncio.open_connection(cfg.host, cfg.port)
            except OSError as exc:
                log.warning("ANPR camera unreachable", extra={"host": cfg.host, "error": str(exc)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.5
            try:
                while line := await reader.readline():
                    self._line(line[:MAX_LINE])
            except (OSError, asyncio.LimitOverrunError, ValueError):
                pass
            finally:
                writer.close()

    async def read(self) -> PlateReading:
        return await self.readings.get()

    async def close(self) -> None:
        self._stop.set()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._thread:
            self._thread.join(1)
        if self._ser is not None:
            self._ser.close()


def build_anpr(cfg: AnprConfig) -> AnprSource:
    return AnprSource(cfg)
