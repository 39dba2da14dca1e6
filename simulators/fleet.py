"""Run edge agents for tests, chaos scenarios and benchmarks: as child processes or inside this process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from edge.agent import Agent
from edge.config import AgentConfig, parse_config


def agent_config(
    workdir: Path,
    *,
    site: str = "riverside",
    device: str = "gate-01",
    host: str = "127.0.0.1",
    port: int = 1883,
    public_key: str | None = None,
    document_key: str | None = None,
    signing_key_file: Path | str | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """A config document for one agent with its outbox under ``workdir``; ``public_key`` and ``document_key``:
    the cloud's command and document keys (base64); ``signing_key_file``: the agent's own key."""
    doc: dict[str, Any] = {
        "device": {"site": site, "id": device, "kind": "gateway"},
        "mqtt": {"host": host, "port": port, "backoff_max_s": 0.5, "keepalive_s": 5},
        "outbox": {"path": str(workdir / f"{device}.db")},
        "health": {"interval_s": 3600},
        "status": {"port": 0},  # many agents on one machine: each its own free port
    }
    if public_key or document_key:
        doc["commands"] = {"public_key": public_key, "document_key": document_key}
    if signing_key_file is not None:
        doc["device"]["signing_key_file"] = str(signing_key_file)
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return doc


def gate_unit(port: str, gallery: Path, **overrides: Any) -> dict[str, Any]:
    """A gate unit's config on the I/O board simulator at ``port`` (lock on output 0, door contact and fire on
    inputs 0 and 1) with the simulated camera; ``overrides`` replace top-level keys."""
    return {
        "type": "gate",
        "door": "door-1",
        "io": {
            "type": "ioboard",
            "port": port,
            "outputs": {"lock": 0},
            "inputs": {"door_contact": 0, "fire": 1},
            "watchdog_s": None,
        },
        "secret": "device-secret",
        "gallery": str(gallery),
        "camera": {"type": "simulated", "fps": 15},
        "open_s": 0.5,
    } | overrides


def write_config(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


class AgentProcess:
    """``civicedge edge run`` as a child process: start, stop (SIGTERM), kill (-9), wait."""

    def __init__(self, config_path: Path, env: dict[str, str] | None = None, log_path: Path | None = None) -> None:
        self.config_path = config_path
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_path or config_path.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, extra_env: dict[str, str] | None = None) -> None:
        env = {**self.env, **(extra_env or {})}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "civicedge_cli", "edge", "run", "--config", str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class InProcessAgents:
    """N agents sharing this process's event loop (cheap fleets for benchmarks and tests)."""

    def __init__(self, docs: list[dict[str, Any]]) -> None:
        self.configs: list[AgentConfig] = [parse_config(d) for d in docs]
        self.agents = [Agent(c, handle_signals=False) for c in self.configs]
        self._tasks: list[asyncio.Task[int]] = []

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(a.run(), name=f"agent:{a.config.device.id}") for a in self.agents]
        await asyncio.gather(*(a.ready.wait() for a in self.agents))

    async def stop(self) -> list[int]:
        for a in self.agents:
            a.request_stop()
        return list(await asyncio.gather(*self._tasks))
