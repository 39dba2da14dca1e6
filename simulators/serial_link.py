"""A null-modem cable between two programs on one machine: two pseudo-terminals whose bytes are copied to each
other. ``a`` and ``b`` are device paths (``/dev/pts/N``) that pyserial, pymodbus or MicroPython's unix port
open like real serial ports. ``cut = True`` drops everything (a pulled cable)."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import threading
import tty


class SerialLink:
    def __init__(self) -> None:
        self._ends = []
        for _ in range(2):
            master, slave = pty.openpty()
            tty.setraw(slave)
            tty.setraw(master)
            self._ends.append((master, slave, os.ttyname(slave)))
        self.a, self.b = self._ends[0][2], self._ends[1][2]
        self.cut = False
        self.bytes = [0, 0]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="serial-link", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        ma, mb = self._ends[0][0], self._ends[1][0]
        peer = {ma: mb, mb: ma}
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([ma, mb], [], [], 0.05)
            except (OSError, ValueError):
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    continue
                if not self.cut:
                    self.bytes[0 if fd == ma else 1] += len(data)
                    with contextlib.suppress(OSError):
                        os.write(peer[fd], data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        for master, slave, _ in self._ends:
            for fd in (master, slave):
                with contextlib.suppress(OSError):
                    os.close(fd)
