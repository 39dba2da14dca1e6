"""Over-the-air updates end to end: simulated gateways (the real launcher and agent processes, A/B install
roots), a real broker, the cloud over HTTP. A good bundle rolls out and the gateways run the new version; a
bundle signed with the wrong key is refused by the cloud and, if one reaches them, by the devices; a version
that dies before it is healthy is rolled back automatically and the rollout aborts before reaching everyone."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from cloud.ingest.store import now_ms
from cloud.service import CloudService
from cloud.updates import tables as u
from edge.appliance import AGENT_PACKAGES
from protocol.signing import generate_key, load_private_key
from protocol.updates import build_bundle
from simulators.fleet import agent_config
from simulators.services import Mosquitto, free_port
from tests.cloud.conftest import MakeCloud, register
from tests.conftest import ROOT, serve
from tests.waits import wait

BASE = "0.1.0"


def _tree(dest: Path, version: str, broken: bool = False) -> Path:
    """The agent's code as a version folder (models left out: these gateways run no vision)."""
    for pkg in AGENT_PACKAGES:
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.tflite"))
    init = dest / "civicedge" / "__init__.py"
    init.write_text(init.read_text().replace(f'__version__ = "{BASE}"', f'__version__ = "{version}"'))
    assert f'__version__ = "{version}"' in init.read_text()  # the stamp took: the agent reports what it runs
    if broken:  # a release that dies at start-up
        (dest / "edge" / "cli.py").write_text("raise SystemExit(3)\n")
    return dest


@dataclass
class Gateway:
    device: str
    root: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def current(self) -> str:
        return os.readlink(self.root / "current").rsplit("/", 1)[-1]


@pytest.fixture
def ota(make_cloud: MakeCloud, mosquitto: Mosquitto, tmp_path: Path) -> Iterator[Any]:
    port = free_port()
    svc, client = make_cloud(public_url=f"http://127.0.0.1:{port}")
    gateways: list[Gateway] = []
    with serve(client.app, port=port, lifespan="off"):

        def start(n: int) -> list[Gateway]:
            assert svc.commands is not None
            register(client, "riverside")
            base = _tree(tmp_path / "base", BASE)
            for i in range(n):
                dev = f"gw-{i + 1}"
                client.post("/api/devices", json={"id": dev, "site_id": "riverside", "kind": "gateway"})
                root = tmp_path / dev
                shutil.copytree(base, root / "versions" / BASE)
                (root / "current").symlink_to(Path("versions") / BASE)
                doc = agent_config(
                    root,
                    device=dev,
                    port=mosquitto.port,
                    **svc.device_keys(),
                    updates={"root": str(root), "public_key": svc.updates.public_key, "health_s": 2, "timeout_s": 30},
                    health={"interval_s": 60},
                )
                (root / "agent.yaml").write_text(yaml.safe_dump(doc))
                log = root / "launcher.log"
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "civicedge_cli",
                        "edge",
                        "launch",
                        "--root",
                        str(root),
                        "--config",
                        str(root / "agent.yaml"),
                    ],
                    stdout=log.open("wb"),
                    stderr=subprocess.STDOUT,
                    cwd=root,
                )
                gateways.append(Gateway(dev, root, proc, log))
            wait(
                lambda: all(_device(client, g.device)["status"] == "online" for g in gateways),
                60,
                "the gateways online",
            )
            return gateways

        yield svc, client, start, tmp_path
    for g in gateways:
        g.proc.send_signal(signal.SIGTERM)
        try:
            g.proc.wait(20)
        except subprocess.TimeoutExpired:
            g.proc.kill()


def _device(client: TestClient, dev: str) -> dict[str, Any]:
    return client.get(f"/api/devices/{dev}").json()  # type: ignore[no-any-return]


def _upload(svc: CloudService, client: TestClient, src: Path, version: str, key: Any = None) -> Any:
    data = build_bundle(
        src,
        kind="gateway",
        version=version,
        key=key or load_private_key(svc.settings.update_key_file),
        min_version=BASE,
    )
    return client.post("/api/updates", content=data)


def _rollout(client: TestClient, bundle: str, **kw: Any) -> str:
    r = client.post("/api/rollouts", json={"bundle_id": bundle, "site": "riverside", "kind": "gateway", **kw})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _finished(client: TestClient, rid: str) -> Callable[[], Any]:
    def check() -> Any:
        ro = client.get(f"/api/rollouts/{rid}").json()
        return ro if ro["state"] != "running" else None

    return check


def test_a_good_update_rolls_out_and_a_forged_one_is_refused(ota: Any) -> None:
    svc, client, start, tmp = ota
    gws = start(2)
    good = _upload(svc, client, _tree(tmp / "v020", "0.2.0"), "0.2.0")
    assert good.status_code == 201, good.text
    rid = _rollout(client, good.json()["id"], rate_per_min=60)
    ro = wait(_finished(client, rid), 90, "the rollout to finish")
    assert ro["state"] == "completed", ro
    assert ro["counts"] == {"healthy": 2}
    for g in gws:
        assert g.current() == "0.2.0"
        wait(lambda g=g: _device(client, g.device).get("agent_version") == "0.2.0", 30, "the new version online")

    # the cloud refuses a bundle not signed by its update key
    forged_src = _tree(tmp / "v030", "0.3.0")
    forged = _upload(svc, client, forged_src, "0.3.0", key=generate_key())
    assert forged.status_code == 422 and "bad_signature" in forged.json()["error"]
    # and should one reach the cloud's store anyway, the gateways refuse it themselves
    data = build_bundle(forged_src, kind="gateway", version="0.3.0", key=generate_key())
    path = svc.updates.dir / "gateway-0.3.0.tar.gz"
    path.write_bytes(data)
    with svc.engine.begin() as conn:
        conn.execute(
            u.update_bundles.insert().values(
                id="gateway-0.3.0",
                kind="gateway",
                version="0.3.0",
                sha256="x",
                size=len(data),
                files=1,
                notes="",
                path=str(path),
                created_ms=now_ms(),
                created_by="intruder",
            )
        )
    rid = _rollout(client, "gateway-0.3.0", rate_per_min=60)
    ro = wait(_finished(client, rid), 60, "the forged rollout to stop")
    assert ro["state"] == "aborted", ro

    def refused() -> Any:  # each gateway's own report (its command's error may arrive first)
        r = client.get(f"/api/rollouts/{rid}").json()
        return r if {d["state"] for d in r["devices"]} == {"refused"} else None

    ro = wait(refused, 60, "both gateways to report the refusal")
    assert all("bad_signature" in d["reason"] for d in ro["devices"])
    assert all(g.current() == "0.2.0" for g in gws)


def test_a_release_that_dies_is_rolled_back_and_the_rollout_stops(ota: Any) -> None:
    svc, client, start, tmp = ota
    gws = start(3)
    bad = _upload(svc, client, _tree(tmp / "v040", "0.4.0", broken=True), "0.4.0")
    assert bad.status_code == 201, bad.text
    rid = _rollout(client, bad.json()["id"], rate_per_min=2, max_failure_ratio=0.2, timeout_s=30)
    ro = wait(_finished(client, rid), 120, "the rollout to stop")
    assert ro["state"] == "aborted" and "failed" in ro["reason"], ro
    states = {d["device_id"]: d["state"] for d in ro["devices"]}
    assert sorted(states.values()) == ["rolled_back", "rolled_back", "skipped"], states
    for g in gws:
        assert g.current() == BASE  # every gateway runs the old version again
        wait(lambda g=g: _device(client, g.device)["status"] == "online", 30, f"{g.device} back online")
    assert "exited with code 3" in next(d["reason"] for d in ro["devices"] if d["state"] == "rolled_back")
