"""The board abstraction: the same firmware runs on an ESP32 / RP2040 and under the MicroPython unix port.

On a board, pins, the UART and the watchdog are ``machine`` objects. Under the unix port (tests, rigs, the
district simulator) the UART is a serial device path (a pseudo-terminal the gateway opens at its other end),
digital inputs are read from a small JSON file the rig writes (``{"inputs": [0, 1, ...]}``) and output levels
are written to another (``{"outputs": [...]}``), so a test can flip a door contact and see a relay.
"""

import json
import sys
import time

UNIX = sys.platform in ("linux", "darwin")


def ticks_ms():
    return time.ticks_ms()  # type: ignore[attr-defined]


def ticks_diff(a, b):
    return time.ticks_diff(a, b)  # type: ignore[attr-defined]


def ticks_add(a, b):
    return time.ticks_add(a, b)  # type: ignore[attr-defined]


def sleep_ms(ms):
    time.sleep_ms(ms)  # type: ignore[attr-defined]


def load_config(path, defaults):
    cfg = dict(defaults)
    try:
        with open(path) as f:
            cfg.update(json.load(f))
    except OSError:
        pass
    return cfg


class UnixUart:
    """A serial device opened by path, polled without blocking."""

    def __init__(self, path):
        import select

        import termios

        self._f = open(path, "r+b")
        fd = self._f.fileno()  # type: ignore[attr-defined]
        termios.setraw(fd)
        attrs = termios.tcgetattr(fd)
        attrs[-1][6], attrs[-1][5] = 0, 0  # VMIN = VTIME = 0: a read returns what is there, never waits
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        self._poll = select.poll()
        self._poll.register(self._f, select.POLLIN)

    def read(self, wait_ms=10):
        if not self._poll.poll(wait_ms):
            return b""
        data = self._f.read(256)
        return data or b""

    def write(self, data):
        self._f.write(data)


class BoardUart:
    def __init__(self, uart_id, baud, tx, rx):
        from machine import UART

        self._u = UART(uart_id, baudrate=baud, tx=tx, rx=rx, timeout=0)

    def read(self, wait_ms=10):
        if not self._u.any():
            sleep_ms(wait_ms)
            return b""
        return self._u.read() or b""

    def write(self, data):
        self._u.write(data)


class UnixPins:
    """Inputs from the rig's JSON file, outputs to another; file reads are cached for ``period_ms``."""

    def __init__(self, n_in, n_out, inputs_path, outputs_path, period_ms=20):
        self.n_in, self.n_out = n_in, n_out
        self._in_path, self._out_path = inputs_path, outputs_path
        self._period = period_ms
        self._last = ticks_ms() - period_ms
        self._inputs = [0] * n_in
        self.write_outputs([0] * n_out)

    def read_inputs(self):
        now = ticks_ms()
        if ticks_diff(now, self._last) >= self._period:
            self._last = now
            try:
                with open(self._in_path) as f:
                    vals = json.load(f).get("inputs", [])
                self._inputs = [1 if (i < len(vals) and vals[i]) else 0 for i in range(self.n_in)]
            except (OSError, ValueError):
                pass  # a half-written file: keep the last reading
        return self._inputs

    def write_outputs(self, levels):
        tmp = self._out_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"outputs": list(levels)}, f)
        import os

        os.rename(tmp, self._out_path)


class UnixSensors:
    """Sensor values from the rig's JSON file (``{"sensors": {...}}``), re-read at most every ``period_ms``."""

    def __init__(self, path, period_ms=20):
        self._path, self._period = path, period_ms
        self._last = ticks_ms() - period_ms
        self.values = {}

    def read(self):
        now = ticks_ms()
        if ticks_diff(now, self._last) >= self._period:
            self._last = now
            try:
                with open(self._path) as f:
                    self.values = json.load(f).get("sensors", {})
            except (OSError, ValueError):
                pass
        return self.values


class BoardPins:
    def __init__(self, in_pins, out_pins):
        from machine import Pin

        self._ins = [Pin(p, Pin.IN, Pin.PULL_UP) for p in in_pins]
        self._outs = [Pin(p, Pin.OUT, value=0) for p in out_pins]
        self.n_in, self.n_out = len(self._ins), len(self._outs)

    def read_inputs(self):
        return [0 if p.value() else 1 for p in self._ins]  # dry contacts to ground: closed = active

    def write_outputs(self, levels):
        for p, v in zip(self._outs, levels):
            p.value(1 if v else 0)


class Watchdog:
    """The hardware watchdog on a board (reset if the main loop hangs); nothing under the unix port."""

    def __init__(self, timeout_ms):
        self._wdt = None
        if not UNIX:
            from machine import WDT

            self._wdt = WDT(timeout=timeout_ms)

    def feed(self):
        if self._wdt is not None:
            self._wdt.feed()


class LogRing:
    """The last ``size`` log lines in RAM (sent to the gateway on request, kept across a soft reset by none)."""

    def __init__(self, size=32):
        self.size = size
        self.lines = []

    def add(self, line):
        self.lines.append(line)
        if len(self.lines) > self.size:
            self.lines.pop(0)
