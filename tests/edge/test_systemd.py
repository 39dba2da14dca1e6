"""The agent and the launcher speak systemd's notify protocol to a real datagram socket, as systemd would
receive it: READY once the units run, WATCHDOG from the event loop (and none while the loop is blocked),
STOPPING on the way out."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.agent import Agent
from edge.config import parse_config
from edge.systemd import Notifier
from simulators.fleet import agent_config, write_config
from simulators.services import Mosquitto


class ServiceManager:
    """The receiving end of NOTIFY_SOCKET: every datagram with the time it arrived."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + path[1:] if path.startswith("@") else path)
        self.sock.settimeout(0.05)
        self.received: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._cond:
                self.received.extend((time.monotonic(), line) for line in data.decode().split("\n"))
                self._cond.notify_all()

    def wait_for(self, line: str, count: int = 1, timeout: float = 20) -> list[float]:
        """Wait until ``line`` has arrived ``count`` times; the times it arrived."""
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.times(line)) >= count, timeout)
        assert ok, f"{line} x{count} not received within {timeout} s; got {[m for _t, m in self.received]}"
        return self.times(line)

    def times(self, line: str) -> list[float]:
        return [t for t, m in list(self.received) if m == line]

    def lines(self) -> list[str]:
        return [m for _t, m in list(self.received)]

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[ServiceManager]:
    m = ServiceManager(str(tmp_path / "notify.sock"))
    yield m
    m.close()


def test_notifier_sends_each_notification_as_one_datagram(manager: ServiceManager) -> None:
    n = Notifier(manager.path, watchdog_usec=10_000_000)
    assert n.ping_interval_s == 5.0
    assert n.ready("online; 1 unit(s)")
    assert n.watchdog() and n.stopping()
    manager.wait_for("STOPPING=1")
    assert manager.lines() == ["READY=1", "STATUS=online; 1 unit(s)", "WATCHDOG=1", "STOPPING=1"]
    n.close()


def test_abstract_socket_addresses_work_and_a_missing_socket_is_not_fatal(tmp_path: Path) -> None:
    name = f"@civicedge-test-{os.getpid()}"
    m = ServiceManager(name)
    try:
        assert Notifier(name).ready()
        m.wait_for("READY=1")
    finally:
        m.close()
    gone = Notifier(str(tmp_path / "nobody-listens.sock"))
    assert not gone.ready() and not gone.watchdog()  # logged once, never raised
    assert not Notifier(None).ready()  # outside systemd: nothing to do


def test_watchdog_is_only_for_the_process_systemd_named() -> None:
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000"}
    assert Notifier.from_env(env).watchdog_s == 30.0
    assert Notifier.from_env({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog_s == 30.0
    assert Notifier.from_env({**env, "WATCHDOG_PID": "1"}).watchdog_s is None
    assert Notifier.from_env({**env, "WATCHDOG_USEC": "junk"}).watchdog_s is None
    assert not Notifier.from_env({}).enabled


async def test_agent_pings_from_its_event_loop_and_a_blocked_loop_stops_the_pings(
    tmp_path: Path, mosquitto: Mosquitto, manager: ServiceManager
) -> None:
    doc = agent_config(tmp_path, host=mosquitto.host, port=mosquitto.port)
    agent = Agent(parse_config(doc), handle_signals=False, notifier=Notifier(manager.path, watchdog_usec=200_000))
    task = asyncio.create_task(agent.run())
    try:
        await asyncio.to_thread(manager.wait_for, "READY=1")
        assert manager.lines()[0] == "READY=1"  # ready before the first ping
        before = await asyncio.to_thread(manager.wait_for, "WATCHDOG=1", 5)
        assert max(b - a for a, b in itertools.pairwise(before)) < 0.5  # every 0.1 s, give or take
        # a call that blocks the event loop for 1.5 s: no pings while it runs
        blocked_at = time.monotonic()
        time.sleep(1.5)  # blocking the loop under test is the point
        unblocked_at = time.monotonic()
        after = await asyncio.to_thread(manager.wait_for, "WATCHDOG=1", len(manager.times("WATCHDOG=1")) + 3)
        during = [t for t in after if blocked_at + 0.05 < t < unblocked_at]
        assert during == [], "a blocked loop must not ping"
        gaps = [b - a for a, b in itertools.pairwise(after)]
        assert max(gaps) >= 1.4  # systemd (WatchdogSec=0.2 s here) would have restarted the service
    finally:
        agent.request_stop()
        assert await asyncio.wait_for(task, 30) == 0
    await asyncio.to_thread(manager.wait_for, "STOPPING=1")


def test_launcher_passes_the_watchdog_to_its_agent(
    tmp_path: Path, mosquitto: Mosquitto, manager: ServiceManager
) -> None:
    root = tmp_path / "app"
    subprocess.run(
        [sys.executable, "-m", "civicedge_cli", "edge", "install-version", "--root", str(root)], check=True, timeout=60
    )
    config = write_config(tmp_path / "agent.yaml", agent_config(tmp_path, host=mosquitto.host, port=mosquitto.port))
    env = {**os.environ, "NOTIFY_SOCKET": manager.path, "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "civicedge_cli", "edge", "launch", "--root", str(root), "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        manager.wait_for("READY=1", timeout=60)
        # WATCHDOG_PID named systemd's main process (the launcher); the agent it started pings all the same
        manager.wait_for("WATCHDOG=1", 4)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, proc.stderr.read().decode() if proc.stderr else ""
    manager.wait_for("STOPPING=1")
