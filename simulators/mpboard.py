"""A MicroPython board on a pty, for tools/flash.py and mpremote without hardware.

The pty speaks the raw REPL the way a board's USB serial does (Ctrl-A enters it and answers
``raw REPL; CTRL-B to exit``, code up to Ctrl-D answers ``OK``, its output, ``\\x04``, its error, ``\\x04``,
``>``; an empty Ctrl-D soft-resets; raw-paste mode is declined, so mpremote falls back to the plain raw REPL).
The code really runs: in a MicroPython unix-port process whose working directory is the board's flash (a
temporary directory), so ``mpremote fs cp`` writes real files there. :meth:`MPBoard.boot` then runs the
deployed ``main.py`` from that flash like a board coming out of reset.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import tty
from pathlib import Path

from simulators.firmware import micropython

# runs inside MicroPython: one base64 line per exec; replies in the raw REPL's own framing
_DRIVER = r"""
import sys, binascii
g = {"__name__": "__main__"}
while True:
    line = sys.stdin.readline()
    if not line:
        break
    code = binascii.a2b_base64(line)
    try:
        exec(code, g)
        sys.stdout.write("\x04\x04>")
    except BaseException as e:
        sys.stdout.write("\x04")
        sys.print_exception(e, sys.stdout)
        sys.stdout.write("\x04>")
"""

BANNER = b"raw REPL; CTRL-B to exit\r\n>"


class MPBoard:
    """``port`` is the device path a technician's tool opens; ``flash`` the board's file system."""

    def __init__(self, flash: Path | None = None, board_id: str = "esp32-sim") -> None:
        self.flash = flash or Path(tempfile.mkdtemp(prefix="ce-mpboard-"))
        self.board_id = board_id
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        self._slave = slave
        self._proc: subprocess.Popen[bytes] | None = None
        self._raw = False
        self._buf = bytearray()
        self._paste = b""
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._serve, name="mpboard", daemon=True)
        self._out: threading.Thread | None = None
        self._soft_reset()
        self._reader.start()
        self.app: subprocess.Popen[bytes] | None = None

    # --- the interpreter behind the REPL ---------------------------------------------------------------

    def _soft_reset(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        driver = self.flash.parent / f".{self.flash.name}-driver.py"
        driver.write_text(_DRIVER)
        self._proc = subprocess.Popen(
            [micropython(), str(driver)],
            cwd=self.flash,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MICROPYPATH": f".frozen:{self.flash / 'lib'}:{self.flash}"},
        )
        proc = self._proc
        self._out = threading.Thread(target=self._pump, args=(proc,), name="mpboard-out", daemon=True)
        self._out.start()

    def _pump(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        while True:
            data = proc.stdout.read1(4096) if hasattr(proc.stdout, "read1") else proc.stdout.read(1)
            if not data:
                return
            self._write(data)

    def _write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            os.write(self.master, data)

    def _exec(self, code: bytes) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        self._write(b"OK")
        self._proc.stdin.write(base64.b64encode(code) + b"\n")
        self._proc.stdin.flush()

    # --- the serial line ---------------------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data = os.read(self.master, 4096)
            except OSError:
                return
            for b in data:
                self._byte(b)

    def _byte(self, b: int) -> None:
        if self._paste or (b == 0x05 and self._raw):
            self._paste += bytes([b])
            if self._paste == b"\x05A\x01":
                self._paste = b""
                self._write(b"R\x00")  # raw-paste understood, not supported
            elif not b"\x05A\x01".startswith(self._paste):
                self._paste = b""
            return
        if b == 0x01:  # Ctrl-A: raw REPL
            self._raw = True
            self._buf.clear()
            self._write(b"\r\n" + BANNER)
        elif b == 0x02:  # Ctrl-B: friendly REPL
            self._raw = False
            self._buf.clear()
            self._write(b"\r\nMicroPython (CivicEdge simulated board)\r\n>>> ")
        elif b == 0x03:  # Ctrl-C
            self._buf.clear()
            if not self._raw:
                self._write(b"\r\n>>> ")
        elif b == 0x04 and self._raw:
            if not self._buf:  # soft reset
                self._soft_reset()
                self._write(b"OK\r\nMPY: soft reboot\r\n" + BANNER)
            else:
                code = bytes(self._buf)
                self._buf.clear()
                self._exec(code)
        elif self._raw:
            self._buf.append(b)

    # --- as if it came out of reset -------------------------------------------------------------------------

    def boot(self, *args: str) -> subprocess.Popen[bytes]:
        """Run the deployed ``main.py`` from the flash (with ``lib/`` on the path), as the board would after a
        hard reset; its console goes to ``console.log`` beside the flash."""
        self.halt()
        log = open(self.flash.parent / f"{self.flash.name}-console.log", "wb")  # noqa: SIM115 - the child's
        self.app = subprocess.Popen(
            [micropython(), "main.py", *args],
            cwd=self.flash,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MICROPYPATH": f"{self.flash / 'lib'}:{self.flash}"},
        )
        return self.app

    def console(self) -> str:
        p = self.flash.parent / f"{self.flash.name}-console.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def halt(self) -> None:
        if self.app is not None and self.app.poll() is None:
            self.app.terminate()
            try:
                self.app.wait(5)
            except subprocess.TimeoutExpired:
                self.app.kill()
                self.app.wait()

    def close(self) -> None:
        self.halt()
        self._stop.set()
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        fds, self._fds_open = (self.master, self._slave) if getattr(self, "_fds_open", True) else (), False
        for fd in fds:  # once: a number closed twice may belong to someone else by then
            with contextlib.suppress(OSError):
                os.close(fd)
        shutil.rmtree(self.flash, ignore_errors=True)
