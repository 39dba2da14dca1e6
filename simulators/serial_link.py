"""A null-modem cable between two programs on one machine: two pseudo-terminals whose bytes are copied to each
other. ``a`` and ``b`` are device paths (``/dev/pts/N``) that pyserial, pymodbus or MicroPython's unix port
open like real serial ports. ``cut = True`` drops everything (a pulled cable); ``rewrite(direction, data)``
(0: bytes written at ``a``, 1: at ``b``) may alter what passes (a garbling line, a confused device)."""

from __future__ import annotations

import contextlib
import os
import pty
import selectors
import threading
import tty
from collections.abc import Callable


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
        self.rewrite: Callable[[int, bytes], bytes] | None = None
        self.bytes = [0, 0]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="serial-link", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        ma, mb = self._ends[0][0], self._ends[1][0]
        peer = {ma: mb, mb: ma}
        # a selector, not select(): a process holding many links has descriptors past select()'s 1,024
        with selectors.DefaultSelector() as sel:
            sel.register(ma, selectors.EVENT_READ)
            sel.register(mb, selectors.EVENT_READ)
            while not self._stop.is_set():
                try:
                    ready = [key.fd for key, _ in sel.select(0.05)]
                except (OSError, ValueError):
                    return
                self._forward(ready, ma, peer)

    def _forward(self, ready: list[int], ma: int, peer: dict[int, int]) -> None:
        for fd in ready:
            try:
                data = os.read(fd, 4096)
            except OSError:
                continue
            if not self.cut:
                direction = 0 if fd == ma else 1
                self.bytes[direction] += len(data)
                if self.rewrite is not None:
                    data = self.rewrite(direction, data)
                with contextlib.suppress(OSError):
                    os.write(peer[fd], data)

    def close(self) -> None:
        """Idempotent: closing a descriptor number twice would close whatever reused it meanwhile (a database
        socket in another thread: seen as a PostgreSQL connection dropping with EBADF)."""
        self._stop.set()
        self._thread.join(1)
        ends, self._ends = self._ends, []
        for master, slave, _ in ends:
            for fd in (master, slave):
                with contextlib.suppress(OSError):
                    os.close(fd)
