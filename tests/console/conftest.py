"""One running deployment for the browser tests: a real Mosquitto, the cloud served by uvicorn on a free port
(SQLite), a gate agent with the I/O board simulator and the simulated camera, accounts for every role, and
Debian's Chromium driven by Playwright. Screenshots go to ``build/test-artifacts/console/``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.publish as mqtt_publish
import pytest

from cloud.app import create_app
from cloud.service import CloudService
from cloud.settings import Settings
from edge.agent import Agent
from edge.config import parse_config
from protocol import encode, envelope
from protocol.messages import Body
from protocol.topics import topic
from simulators.fleet import agent_config
from simulators.ioboard import IOBoardSim
from simulators.services import Mosquitto
from tests.cloud.test_gate_flow import gate_units
from tests.conftest import ROOT, _require, serve
from tests.waits import wait

ARTIFACTS = ROOT / "build" / "test-artifacts" / "console"
CHROMIUM = Path("/usr/bin/chromium")
PASSWORD = "correct horse battery"
SITE = "riverside"
# user name → (role, department, resident, language)
USERS: dict[str, tuple[str, str | None, str | None, str]] = {
    "admin": ("admin", None, None, "en"),
    "li.operator": ("operator", None, None, "en"),
    "wang.operator": ("operator", None, None, "zh-CN"),
    "water.staff": ("department", "water", None, "en"),
    "roads.staff": ("department", "roads", None, "en"),
    "zhao.grid": ("grid_worker", None, None, "en"),
    "chen.resident": ("resident", None, "res-1203", "en"),
}


@dataclass
class Stack:
    base: str
    svc: CloudService
    broker: Mosquitto
    board: IOBoardSim
    agent: Agent
    loop: asyncio.AbstractEventLoop
    seq: dict[str, int] = field(default_factory=dict)

    @property
    def gate(self) -> Any:
        return self.agent.units[0]

    def on_agent(self, coro: Any) -> Future[Any]:
        """Run a coroutine on the agent's event loop (its own thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def device_says(self, device: str, body: Body, channel: str = "alm") -> None:
        """What a field device would publish: a protocol envelope on its own topic."""
        n = self.seq[device] = self.seq.get(device, 0) + 1
        payload = encode(envelope(body, dev=device, seq=n))
        mqtt_publish.single(
            topic(SITE, device, channel), payload, qos=1, hostname=self.broker.host, port=self.broker.port
        )


def _seed(svc: CloudService) -> None:
    """Departments, a grid, assets with coordinates (for the map), devices, residents and one user per role."""
    from sqlalchemy import insert

    from cloud.db import schema as t
    from cloud.ingest.store import now_ms
    from cloud.registry.tables import assets, departments, grid_cells
    from edge.vision.detect import FaceDetector
    from edge.vision.embed import Embedder
    from simulators.camera import photo

    now = now_ms()
    with svc.engine.begin() as conn:
        conn.execute(insert(t.sites).values(id=SITE, name="Riverside Gardens", created_ms=now))
        for dev, kind in (
            ("gate-01", "gate"),
            ("mh-101", "manhole"),
            ("mh-202", "manhole"),
            ("lift-01", "elevator"),
            ("tower-01", "parking"),
        ):
            conn.execute(
                insert(t.devices).values(id=dev, site_id=SITE, kind=kind, name=dev, status="unknown", created_ms=now)
            )
        for d, name in (("water", "Water Authority"), ("roads", "Roads Bureau"), ("power", "Power Grid")):
            conn.execute(insert(departments).values(id=d, name=name, contact="", created_ms=now))
        for i in range(6):
            conn.execute(insert(grid_cells).values(id=f"cell-{i + 1:02d}", name=f"Cell {i + 1}", created_ms=now))
        rows = []
        for i in range(120):  # a few blocks of covers around the river, three owners, six grid cells
            cell = i % 6
            rows.append(
                {
                    "id": f"cover-{i + 100:03d}",
                    "kind": "manhole",
                    "subtype": ("sewer", "storm", "power")[i % 3],
                    "department_id": ("water", "roads", "power")[i % 3],
                    "grid_cell_id": f"cell-{cell + 1:02d}",
                    "lat": 31.2300 + (cell // 3) * 0.004 + (i * 37 % 11) * 0.0003,
                    "lon": 121.4700 + (cell % 3) * 0.005 + (i * 53 % 13) * 0.0003,
                    "device_id": {101: "mh-101", 202: "mh-202"}.get(i + 100),
                    "notes": "",
                    "created_ms": now,
                    "updated_ms": now,
                }
            )
        rows[101 - 100]["department_id"] = "water"
        rows[202 - 100]["department_id"] = "roads"
        conn.execute(insert(assets), rows)
    for name, (role, dept, res, lang) in USERS.items():
        svc.auth.create_user(name, PASSWORD, role, dept, res, lang)
    svc.gate.add_resident(SITE, "res-1203", "1203", "Chen Jie", consent=True)
    svc.gate.add_resident(SITE, "res-astronaut", "0304", "Eileen Collins", consent=True)
    det, emb = FaceDetector(), Embedder(1)
    rgb = photo("astronaut")
    svc.gate.add_faces("res-astronaut", [emb.embed(rgb, det.refine(rgb, det.detect(rgb)[0]))])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: apt-get install chromium chromium-driver (make test does it)")
    tmp = tmp_path_factory.mktemp("console")
    broker = _require(lambda: Mosquitto(workdir=tmp / "mosquitto"))
    broker.start()
    settings = Settings(
        database_url=f"sqlite:///{tmp / 'cloud.db'}",
        broker_url=broker.url,
        command_key_file=tmp / "key.pem",
        media_dir=tmp / "media",
        rules_file=ROOT / "cloud" / "rules" / "default.yaml",
        ingest_batch_ms=20,
        _env_file=None,  # type: ignore[call-arg]
    )
    svc = CloudService(settings)
    served = serve(create_app(service=svc))
    base = served.__enter__()
    assert all(w.connected.wait(10) for w in svc.workers)
    _seed(svc)

    board = IOBoardSim()
    assert svc.commands is not None
    doc = agent_config(
        tmp,
        host=broker.host,
        port=broker.port,
        **svc.device_keys(),
        units=gate_units(tmp, board, visitor_answer_s=60),
    )
    agent = Agent(parse_config(doc), handle_signals=False)
    loop = asyncio.new_event_loop()
    done: Future[int] = Future()

    def run_agent() -> None:
        asyncio.set_event_loop(loop)
        try:
            done.set_result(loop.run_until_complete(agent.run()))
        except BaseException as exc:  # reported by the teardown
            done.set_exception(exc)

    agent_thread = threading.Thread(target=run_agent, name="gate-agent", daemon=True)
    agent_thread.start()
    wait(lambda: agent.units and getattr(agent.units[0], "vision", None), 60, "the gate to load its models")
    wait(lambda: len(agent.units[0].gallery) == 1, 30, "the gate's gallery snapshot")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        yield Stack(base, svc, broker, board, agent, loop)
    finally:
        loop.call_soon_threadsafe(agent.request_stop)
        assert done.result(30) in (0, 75)
        served.__exit__(None, None, None)
        board.close()
        broker.close()


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            yield b
        finally:
            b.close()


Login = Callable[..., Any]


@pytest.fixture
def login(stack: Stack, browser: Any) -> Iterator[Login]:
    """``login(user, phone=False)`` → a Playwright page signed in as that user (a fresh browser context)."""
    contexts: list[Any] = []

    def open_as(username: str, phone: bool = False) -> Any:
        opts: dict[str, Any] = {"base_url": stack.base, "locale": "en-GB"}
        opts |= (
            {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
            if phone
            else {"viewport": {"width": 1440, "height": 900}}
        )
        ctx = browser.new_context(**opts)
        ctx.set_default_timeout(20_000)
        contexts.append(ctx)
        page = ctx.new_page()
        page.goto("/console/login")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", PASSWORD)
        page.click("button.primary")
        page.wait_for_url(lambda u: "/console/login" not in u)
        return page

    yield open_as
    for c in contexts:
        c.close()


def shot(page: Any, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
