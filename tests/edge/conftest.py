from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from edge.agent import Agent
from edge.config import parse_config
from simulators.fleet import agent_config
from simulators.services import Mosquitto

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

    yield start
    for agent, task in running:
        agent.request_stop()
        assert await asyncio.wait_for(task, 30) in (0, 75)
