"""Real service processes (Mosquitto, VictoriaMetrics) started on free loopback ports.

Used by the tests, the chaos scenarios, the benchmarks and the demo, so each can stop, start and restart
a real broker. Processes are always reaped: use them as context managers or call :meth:`close`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self


class ServiceMissing(RuntimeError):
    """A required program is not installed; the message names the package to install."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    """Return once ``host:port`` accepts TCP connections; raise TimeoutError otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from None
            time.sleep(0.01)


def find_program(name: str, package: str) -> str:
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None)
    if not path:
        raise ServiceMissing(f"{name} not found: install the Debian package '{package}' (apt-get install {package})")
    return path


class _Process:
    """A child process with start/stop/restart; subclasses build the command and the readiness check."""

    name = "service"

    def __init__(self, workdir: Path | None = None) -> None:
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix=f"ce-{self.name}-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def wait_ready(self) -> None:
        raise NotImplementedError

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        try:
            self.wait_ready()
        except TimeoutError as exc:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {exc}\n{self.log_tail()}") from None

    def stop(self, kill: bool = False) -> None:
        """Stop gracefully (SIGTERM: the broker saves its persistence), or ``kill=True`` for SIGKILL."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class Mosquitto(_Process):
    """A real Mosquitto on a free loopback port, persistence on, logging to its own file."""

    name = "mosquitto"

    def __init__(
        self, port: int | None = None, workdir: Path | None = None, extra_conf: str = "", security: str | None = None
    ) -> None:
        """``security``: settings that replace anonymous access (they come first in the file, as Mosquitto
        wants for ``per_listener_settings``), e.g. from cloud.provisioning.broker.security_conf."""
        super().__init__(workdir)
        self.binary = find_program("mosquitto", "mosquitto")
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.security = security

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def config(self) -> str:
        lines = [
            *([self.security.strip()] if self.security else []),
            f"listener {self.port} {self.host}",
            *([] if self.security else ["allow_anonymous true"]),
            "persistence true",
            f"persistence_location {self.workdir}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "max_queued_messages 0",
            "max_inflight_messages 0",
            "max_packet_size 1048576",
            "set_tcp_nodelay true",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        return "\n".join(lines) + "\n" + self.extra_conf

    def command(self) -> list[str]:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config())
        return [self.binary, "-c", str(conf)]

    def wait_ready(self) -> None:
        wait_port(self.host, self.port)


class VictoriaMetrics(_Process):
    """A real VictoriaMetrics single node; accepts InfluxDB ``/api/v2/write``, answers PromQL."""

    name = "victoria-metrics"

    def __init__(self, port: int | None = None, workdir: Path | None = None) -> None:
        super().__init__(workdir)
        self.binary = find_program("victoria-metrics", "victoria-metrics")
        self.host = "127.0.0.1"
        self.port = port or free_port()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        return [
            self.binary,
            f"-httpListenAddr={self.host}:{self.port}",
            f"-storageDataPath={self.workdir / 'data'}",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-loggerLevel=ERROR",
        ]

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while True:
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(f"{self.url}/health", timeout=1) as r,
            ):
                if r.status == 200:
                    return
            if time.monotonic() > deadline:
                raise TimeoutError("victoria-metrics /health did not answer")
            if self.proc is not None and self.proc.poll() is not None:
                raise TimeoutError(f"victoria-metrics exited with {self.proc.returncode}")
            time.sleep(0.05)

    def flush(self) -> None:
        """Make just-written samples searchable now (instead of after the ~1 s buffer)."""
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=5):
            pass
