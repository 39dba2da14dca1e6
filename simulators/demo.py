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
from dataclasses import replace
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


def run_demo(
    workdir: Path = Path("var/demo"),
    port: int = 8000,
    gateways: int = 0,
    covers: int | None = None,
    size: str = "small",
) -> None:
    import uvicorn

    from civicedge.log import setup_logging
    from cloud.app import create_app
    from cloud.settings import Settings
    from simulators.district_run import SIZES, DistrictRun, answering_residents
    from simulators.fleet import InProcessAgents, agent_config

    setup_logging("warning")  # the units' warnings, one line each; the demo's own output stays readable
    preset = SIZES[size]
    spec = preset.covers if covers is None else replace(preset.covers, covers=covers, cells=max(4, covers // 15))
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
        api_tokens=[f"admin:{setup_token}"],  # the demo's own set-up (the registry holds confidential assets)
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

    svc = app.state.service
    keys = svc.device_keys()
    full = size == "full"
    # broker restarts only when the demo runs Mosquitto itself
    schedule = preset.schedule if isinstance(broker, Mosquitto) else replace(preset.schedule, broker_restart_every_s=0)
    district = DistrictRun(
        spec,
        preset.community,
        workdir / "district",
        "127.0.0.1",
        broker.port,
        keys["public_key"],
        keys["document_key"],
        schedule=schedule,
        broker=broker if isinstance(broker, Mosquitto) else None,
        site="riverside",
        processes=preset.processes,
    )
    extra = [f"gw-{i + 1:02d}" for i in range(gateways)]  # plain gateways (a ticker) for load
    api = httpx.Client(base_url=base, timeout=60, headers={"Authorization": f"Bearer {setup_token}"})
    print(f"setting up the {size} district…", flush=True)
    district.register(api, progress=lambda m: print(f"  district: {m}", flush=True))
    for d in extra:
        api.post("/api/devices", json={"id": d, "site_id": "riverside", "kind": "gateway", "name": d})
    password = secrets.token_urlsafe(12)
    resident_password = secrets.token_urlsafe(9)
    if not svc.auth.has_users():  # a demo admin; from now on the API and console need a login
        svc.auth.create_user("demo", password, "admin", by="demo")
        svc.auth.create_user("chen", resident_password, "resident", resident_id="res-1203", by="demo")
    else:
        password = resident_password = "(unchanged: the demo's database already has accounts)"
    docs = [
        agent_config(
            workdir / "agents",
            device=d,
            port=broker.port,
            **keys,
            health={"interval_s": 10},
            units=[{"type": "ticker", "rate_per_s": 0.5, "readings": True}],
        )
        for d in extra
    ]

    async def agents() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await district.start()
        fleet = InProcessAgents(docs)
        await fleet.start()
        print(f"\nCivicEdge demo running ({kind} on 127.0.0.1:{broker.port}, cloud at {base})\n")
        print(f"  console            {base}/console/   user: demo   password: {password}")
        print(f"  resident's phone   {base}/console/   user: chen   password: {resident_password}  (flat 1203)")
        print(f"  API and its docs   {base}/docs")
        print(f"  devices            {base}/api/devices")
        print(f"  telemetry          {base}/api/devices/mh-00001/telemetry?metric=tilt_deg")
        print(f"  health / metrics   {base}/healthz   {base}/metrics")
        print(
            f"  send a command     curl -X POST {base}/api/devices/gate-01/commands "
            "-H 'content-type: application/json' -d '{\"name\": \"ping\"}'"
        )
        print("\nCtrl-C stops everything.\n", flush=True)
        # in the small demo the resident of flat 1203 answers on the phone; in the full district every
        # resident's phone answers by itself
        answer = answering_residents(api) if full else None
        try:
            await district.run(stop, answer)
        finally:
            print("stopping…", flush=True)
            await fleet.stop()
            await district.close()

    try:
        asyncio.run(agents())
    finally:
        api.close()
        server.should_exit = True
        thread.join(15)
        broker.close()
        print("stopped.")
