"""``civicedge sim demo``: a broker, the cloud on http://127.0.0.1:8000 and a few simulated gateways.

Mosquitto is used when installed (started on its own port); otherwise the in-process ``amqtt`` broker.
Everything stops cleanly on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import httpx

from simulators.services import Mosquitto, free_port, wait_port


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class AmqttBroker:
    """The embedded fallback broker, on its own thread and event loop (paho clients may block)."""

    def __init__(self, port: int) -> None:
        self.host, self.port = "127.0.0.1", port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="amqtt", daemon=True)
        self._broker: Any = None

    def start(self) -> None:
        from amqtt.broker import Broker

        self._thread.start()
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "auth": {"allow-anonymous": True, "plugins": ["auth_anonymous"]},
            "topic-check": {"enabled": False},
        }

        async def boot() -> None:
            with warnings.catch_warnings():  # amqtt's own deprecation notices about its config format
                warnings.simplefilter("ignore", DeprecationWarning)
                self._broker = Broker(config)
                await self._broker.start()

        asyncio.run_coroutine_threadsafe(boot(), self._loop).result(15)
        wait_port(self.host, self.port)

    def close(self) -> None:
        if self._broker is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)


def _embedding(person: str) -> Any:
    """A face embedding from one of the shipped photos, with the gates' own models."""
    from edge.vision.detect import FaceDetector
    from edge.vision.embed import Embedder
    from simulators.camera import photo

    rgb, det = photo(person), FaceDetector()
    return Embedder(1).embed(rgb, det.refine(rgb, det.detect(rgb)[0]))


def run_demo(workdir: Path = Path("var/demo"), port: int = 8000, gateways: int = 0, covers: int = 300) -> None:
    import uvicorn

    from cloud.api.app import create_app
    from cloud.settings import Settings
    from protocol.signing import public_key_b64
    from simulators.demo_scenario import DemoSite
    from simulators.district import CoverFleet, DistrictSpec, generate, register
    from simulators.fleet import InProcessAgents, agent_config

    workdir.mkdir(parents=True, exist_ok=True)
    broker: Mosquitto | AmqttBroker
    if shutil.which("mosquitto") or os.path.exists("/usr/sbin/mosquitto"):
        broker = Mosquitto(workdir=workdir / "mosquitto")
        kind = "Mosquitto"
    else:
        broker = AmqttBroker(free_port())
        kind = "embedded amqtt"
    broker.start()
    if not _port_free(port):
        port = free_port()
    setup_token = secrets.token_urlsafe(24)  # new every run: a rerun over the same folder still sets up
    settings = Settings(
        database_url=f"sqlite:///{workdir / 'civicedge.db'}",
        broker_url=f"mqtt://127.0.0.1:{broker.port}",
        command_key_file=workdir / "command-key.pem",
        update_key_file=workdir / "update-key.pem",
        media_dir=workdir / "media",
        rules_file=Path(__file__).resolve().parent.parent / "cloud" / "rules" / "default.yaml",
        public_url=f"http://127.0.0.1:{port}",
        api_tokens=[setup_token],  # the demo's own set-up calls; people log in
        port=port,
        _env_file=None,
    )
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the cloud service did not start; see the messages above")
        time.sleep(0.05)

    site = DemoSite(workdir)
    units = site.units()
    extra = [f"gw-{i + 1:02d}" for i in range(gateways)]  # plain gateways (a ticker) for load
    district = generate(DistrictSpec(covers=covers, cells=max(4, covers // 15), site="riverside"))
    with httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {setup_token}"}) as api:
        api.post("/api/sites", json={"id": "riverside", "name": "Riverside Gardens"})
        for d, dkind in (
            ("gate-01", "gate"),
            ("tower-01", "parking_lift"),
            ("lift-12", "elevator"),
            *((g, "gateway") for g in extra),
        ):
            api.post("/api/devices", json={"id": d, "site_id": "riverside", "kind": dkind, "name": d})
        if covers:
            register(district, api, progress=lambda m: print(f"  district: {m}", flush=True))
    svc = app.state.service
    pub = public_key_b64(svc.commands.key)
    password = secrets.token_urlsafe(12)
    resident_password = secrets.token_urlsafe(9)
    if not svc.auth.has_users():  # a demo admin; from now on the API and console need a login
        svc.auth.create_user("demo", password, "admin", by="demo")
        svc.auth.create_user("chen", resident_password, "resident", resident_id="res-1203", by="demo")
        svc.gate.add_resident("riverside", "res-1203", "1203", "Chen Jie", consent=True, by="demo")
        svc.gate.add_resident("riverside", "res-0304", "0304", "Eileen Collins", consent=True, by="demo")
        svc.gate.add_faces("res-0304", [_embedding("astronaut")])
    else:
        password = resident_password = "(unchanged: the demo's database already has accounts)"
    docs = [
        agent_config(workdir / "agents", device=d, port=broker.port, public_key=pub, health={"interval_s": 10}, units=u)
        for d, u in units.items()
    ] + [
        agent_config(
            workdir / "agents",
            device=d,
            port=broker.port,
            public_key=pub,
            health={"interval_s": 10},
            units=[{"type": "ticker", "rate_per_s": 0.5, "readings": True}],
        )
        for d in extra
    ]

    print(f"\nCivicEdge demo running ({kind} on 127.0.0.1:{broker.port}, cloud at {base})\n")
    print(f"  console            {base}/console/   user: demo   password: {password}")
    print(f"  resident's phone   {base}/console/   user: chen   password: {resident_password}  (flat 1203)")
    print(f"  API and its docs   {base}/docs")
    print(f"  devices            {base}/api/devices")
    print(f"  telemetry          {base}/api/devices/mh-00001/telemetry?metric=tilt_deg")
    print(f"  health / metrics   {base}/healthz   {base}/metrics")
    print(
        f"  send a command     curl -X POST {base}/api/devices/gate-01/commands -H 'content-type: application/json' "
        '-d \'{"name": "ping"}\''
    )
    print("\nCtrl-C stops everything.\n", flush=True)

    async def agents() -> None:
        fleet = InProcessAgents(docs)
        await fleet.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # covers report every 15 district minutes at 30× (every 30 s here); a fault every 10 district minutes
        nodes = CoverFleet(district, "127.0.0.1", broker.port, speed=30, fault_every_s=600, fault_s=900)
        node_task = asyncio.create_task(nodes.run(stop)) if covers else None
        by_id = {a.config.device.id: a for a in fleet.agents}
        scene = asyncio.create_task(site.run(by_id, stop))
        await stop.wait()
        print("stopping…", flush=True)
        if node_task is not None:
            await asyncio.wait_for(node_task, 10)
        await asyncio.wait_for(scene, 10)
        await fleet.stop()

    try:
        asyncio.run(agents())
    finally:
        site.close()
        server.should_exit = True
        thread.join(15)
        broker.close()
        print("stopped.")
