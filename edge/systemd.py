"""The systemd service-manager protocol (``sd_notify``), spoken directly: one datagram per notification to the
socket named by ``NOTIFY_SOCKET``.

Under the installed unit (``Type=notify``, ``WatchdogSec=``, ``NotifyAccess=all``: see :mod:`edge.appliance`) the
launcher is the service's main process and the agent its child; the agent says ``READY=1`` once its units run,
then ``WATCHDOG=1`` from its event loop every half watchdog period. A loop that stops turning stops the pings,
and systemd kills and restarts the service. Outside systemd (no ``NOTIFY_SOCKET``) every call does nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket

log = logging.getLogger("civicedge.systemd")


class Notifier:
    """Notifications to the service manager; a no-op when there is none."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        #: the watchdog period systemd expects pings within (None: no watchdog)
        self.watchdog_s = watchdog_usec / 1_000_000 if watchdog_usec else None
        self.sent = 0
        self._warned = False
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Notifier:
        """What systemd passed down. ``WATCHDOG_PID``, when set, names the one process the watchdog is for
        (``sd_watchdog_enabled``); the launcher removes it for the agent it starts."""
        env = dict(os.environ) if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        usec: int | None = None
        with contextlib.suppress(ValueError):
            usec = int(env.get("WATCHDOG_USEC", "")) or None
        pid = env.get("WATCHDOG_PID")
        if pid and pid != str(os.getpid()):
            usec = None
        return cls(address, usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def ping_interval_s(self) -> float | None:
        """Half the watchdog period, as sd_watchdog_enabled(3) advises."""
        return self.watchdog_s / 2 if self.watchdog_s else None

    def notify(self, *fields: str) -> bool:
        """Send ``KEY=value`` lines as one datagram; False (logged once) if it could not be sent."""
        if self.address is None:
            return False
        addr = self.address
        if addr.startswith("@"):  # an abstract socket
            addr = "\0" + addr[1:]
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(fields).encode(), addr)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify systemd", extra={"socket": self.address, "error": str(exc)})
                self._warned = True
            return False
        self.sent += 1
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text[:200]}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
