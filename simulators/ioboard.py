"""The project's I/O board, simulated on a pseudo-terminal: relays (outputs) and digital inputs behind the
serial frame protocol (``protocol.serial_frame``), as the MicroPython firmware implements it.

The gateway opens ``board.port`` (the pty's slave side) like a USB serial device. Tests flip inputs with
``set_input`` (an ``input changed`` event goes out at once) and read ``history``: every output change with a
monotonic timestamp, to see that a pulse really happened and how long it lasted. ``alive = False`` makes the
board go silent (a dead controller); a watchdog, when configured, drops outputs to the safe state if the
gateway stops kicking it.
"""

from __future__ import annotations

import contextlib
import os
import pty
import selectors
import threading
import time
import tty

from protocol import serial_frame as sf


class IOBoardSim:
    def __init__(self, outputs: int = 8, inputs: int = 8) -> None:
        self.n_out, self.n_in = outputs, inputs
        self.outputs = 0
        self.inputs = 0
        self.history: list[tuple[float, int, bool]] = []  # (monotonic, channel, on)
        self.requests = 0
        self.alive = True
        self._master, slave = pty.openpty()
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        self._slave = slave
        self._lock = threading.Lock()
        self._timers: dict[int, threading.Timer] = {}
        self._evt_seq = 0
        self._watchdog_s = 0.0
        self._safe = 0
        self._last_kick = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="ioboard-sim", daemon=True)
        self._thread.start()

    # --- test side ---------------------------------------------------------------------------------

    def set_input(self, channel: int, on: bool) -> None:
        with self._lock:
            before = self.inputs
            self.inputs = (self.inputs | (1 << channel)) if on else (self.inputs & ~(1 << channel))
            changed = before ^ self.inputs
        if changed and self.alive:
            self._send(sf.KIND_EVT, self._next_evt(), sf.OP_INPUT_CHANGED, sf.u16(self.inputs) + sf.u16(changed))

    def output(self, channel: int) -> bool:
        return bool(self.outputs & (1 << channel))

    def pulses(self, channel: int) -> list[float]:
        """Durations (s) of completed on→off pulses on a channel."""
        out, on_at = [], None
        for ts, ch, on in self.history:
            if ch != channel:
                continue
            if on and on_at is None:
                on_at = ts
            elif not on and on_at is not None:
                out.append(ts - on_at)
                on_at = None
        return out

    def close(self) -> None:
        self._stop.set()
        for tm in list(self._timers.values()):
            tm.cancel()
        self._thread.join(2)
        fds, self._fds_open = (self._master, self._slave) if getattr(self, "_fds_open", True) else (), False
        for fd in fds:  # once: a number closed twice may belong to someone else by then
            with contextlib.suppress(OSError):
                os.close(fd)

    # --- board side --------------------------------------------------------------------------------

    def _next_evt(self) -> int:
        self._evt_seq = (self._evt_seq + 1) & 0xFF
        return self._evt_seq

    def _send(self, kind: int, seq: int, op: int, payload: bytes = b"") -> None:
        with contextlib.suppress(OSError):
            os.write(self._master, sf.encode_frame(kind, seq, op, payload))

    def _apply(self, new: int) -> None:
        now = time.monotonic()
        with self._lock:
            changed = self.outputs ^ new
            self.outputs = new
            for ch in range(self.n_out):
                if changed & (1 << ch):
                    self.history.append((now, ch, bool(new & (1 << ch))))

    def _pulse_end(self, channel: int) -> None:
        self._timers.pop(channel, None)
        self._apply(self.outputs & ~(1 << channel))

    def _handle(self, seq: int, op: int, payload: bytes) -> None:
        self.requests += 1
        try:
            if op == sf.OP_PING:
                self._send(sf.KIND_RSP, seq, op, payload)
            elif op == sf.OP_INFO:
                self._send(sf.KIND_RSP, seq, op, f"ioboard-sim 1.0 in={self.n_in} out={self.n_out}".encode())
            elif op == sf.OP_READ_INPUTS:
                self._send(sf.KIND_RSP, seq, op, sf.u16(self.inputs) + sf.u16(self.outputs))
            elif op == sf.OP_SET_OUTPUTS:
                mask, values = sf.get_u16(payload), sf.get_u16(payload, 2)
                for ch in range(self.n_out):
                    if mask & (1 << ch) and ch in self._timers:
                        self._timers.pop(ch).cancel()
                self._apply((self.outputs & ~mask) | (values & mask))
                self._send(sf.KIND_RSP, seq, op, sf.u16(self.outputs))
            elif op == sf.OP_PULSE_OUTPUT:
                if len(payload) < 3 or payload[0] >= self.n_out:
                    raise ValueError("bad pulse")
                ch, ms = payload[0], sf.get_u16(payload, 1)
                if ch in self._timers:
                    self._timers.pop(ch).cancel()
                self._apply(self.outputs | (1 << ch))
                tm = threading.Timer(ms / 1000, self._pulse_end, (ch,))
                tm.daemon = True
                self._timers[ch] = tm
                tm.start()
                self._send(sf.KIND_RSP, seq, op, sf.u16(self.outputs))
            elif op == sf.OP_WATCHDOG_CONFIG:
                self._watchdog_s = sf.get_u16(payload) / 1000
                self._safe = sf.get_u16(payload, 2)
                self._last_kick = time.monotonic()
                self._send(sf.KIND_RSP, seq, op)
            elif op == sf.OP_WATCHDOG_KICK:
                self._last_kick = time.monotonic()
                self._send(sf.KIND_RSP, seq, op)
            else:
                self._send(sf.KIND_NAK, seq, op, bytes([sf.NAK_BAD_OP]))
        except (ValueError, sf.FrameError):
            self._send(sf.KIND_NAK, seq, op, bytes([sf.NAK_BAD_ARGS]))

    def _serve(self) -> None:
        reader = sf.FrameReader()
        sel = selectors.DefaultSelector()  # not select(): descriptors past 1,024 in a process with many boards
        sel.register(self._master, selectors.EVENT_READ)
        while not self._stop.is_set():
            try:
                ready = sel.select(0.05)
            except (OSError, ValueError):
                sel.close()
                return
            if self._watchdog_s and time.monotonic() - self._last_kick > self._watchdog_s:
                self._watchdog_s = 0.0
                self._apply(self._safe)
                self._send(sf.KIND_EVT, self._next_evt(), sf.OP_SAFE_STATE, sf.u16(self.outputs))
            if not ready:
                continue
            try:
                chunk = os.read(self._master, 4096)
            except OSError:
                return
            if not self.alive:
                continue
            for kind, seq, op, payload in reader.feed(chunk):
                if kind == sf.KIND_REQ:
                    self._handle(seq, op, payload)
