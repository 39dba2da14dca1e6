"""Each extra installs what its part imports: a fresh virtual environment with only ``.[edge]`` or only
``.[cloud]`` (the project built and installed as a user would, not from this checkout) imports every module of
that part and starts it — ``civicedge edge check-config`` on a gateway's config, ``civicedge cloud run`` until
its ``/healthz`` answers. Packages come from the machine's pip cache when ``make venv`` already fetched them."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from simulators.services import Mosquitto

ROOT = Path(__file__).resolve().parents[1]
#: what each part is: its packages (every module in them) and single modules
PARTS = {
    "edge": ("civicedge", "protocol", "edge"),
    # and the gateway's face models, which the cloud enrols faces with
    "cloud": ("civicedge", "protocol", "cloud", "edge.vision.detect", "edge.vision.embed", "edge.inference"),
}
IMPORT_ALL = """
import importlib, json, pkgutil, sys
failed = {}
for top in sys.argv[1:]:
    pkg = importlib.import_module(top)
    for info in pkgutil.walk_packages(getattr(pkg, "__path__", []), top + "."):
        if ".migrations." in info.name:
            continue  # alembic's environment and revision scripts: run by alembic, not importable on their own
        try:
            importlib.import_module(info.name)
        except Exception as exc:
            failed[info.name] = f"{type(exc).__name__}: {exc}"
print(json.dumps(failed))
"""
GATEWAY = """
device: {site: riverside, id: gate-01, kind: gateway}
mqtt: {host: 127.0.0.1, port: 1883, username: gate-01, password: pw}
outbox: {path: var/gate.db, budget_bytes: 1000000}
units:
  - {type: ticker, rate_per_s: 2}
"""


#: what a build of the project leaves in or beside the sources, never part of it
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "build", "var", "node_modules", "__pycache__", "*.egg-info", ".*_cache", ".hypothesis"
)


def _venv(tmp: Path, extra: str) -> Path:
    """A fresh environment with the project built from a clean copy of this checkout (a build in the checkout
    would reuse what an earlier build left in ``build/``) and only ``extra`` installed."""
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCES)
    env_dir = tmp / f"venv-{extra}"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=120)
    py = env_dir / "bin" / "python"
    done = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), f"{src}[{extra}]"],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=tmp,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return py


def _isolated(py: Path, *args: str, **kw: object) -> subprocess.CompletedProcess[str]:
    """Run in the fresh environment, away from this checkout (``-I``: no current directory, no PYTHONPATH)."""
    return subprocess.run([str(py), "-I", *args], capture_output=True, text=True, timeout=300, **kw)  # type: ignore[call-overload, no-any-return]


def _clean_env(tmp: Path) -> dict[str, str]:
    """No PYTHONPATH or virtual environment of this checkout leaks into the fresh one."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp)}


def _civicedge(py: Path, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The fresh environment's ``civicedge`` command, run away from this checkout."""
    return subprocess.run(
        [str(py.parent / "civicedge"), *args], capture_output=True, text=True, timeout=120, cwd=tmp, env=_clean_env(tmp)
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_the_edge_extra_installs_what_the_gateway_imports(tmp_path: Path) -> None:
    py = _venv(tmp_path, "edge")
    out = _isolated(py, "-c", IMPORT_ALL, *PARTS["edge"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout) == {}
    config = tmp_path / "gateway.yaml"
    config.write_text(GATEWAY)
    checked = _civicedge(py, tmp_path, "edge", "check-config", str(config))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("ok: device riverside/gate-01")


@pytest.mark.slow
def test_the_cloud_extra_installs_what_the_cloud_imports(tmp_path: Path) -> None:
    py = _venv(tmp_path, "cloud")
    out = _isolated(py, "-c", IMPORT_ALL, *PARTS["cloud"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout) == {}
    # the gateway's commands are not installed here: they say what to install, and the cloud's still work
    edge = _civicedge(py, tmp_path, "edge", "check-config", "x.yaml")
    assert edge.returncode == 2 and "pip install 'civicedge[edge]'" in edge.stderr, edge.stderr
    port = _free_port()
    with Mosquitto(workdir=tmp_path / "broker") as broker:
        env = {
            **_clean_env(tmp_path),
            "CE_DATABASE_URL": f"sqlite:///{tmp_path / 'cloud.db'}",
            "CE_BROKER_URL": f"mqtt://127.0.0.1:{broker.port}",
        }
        proc = subprocess.Popen(
            [str(py.parent / "civicedge"), "cloud", "run", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            status = None
            deadline = time.monotonic() + 120
            while status is None and time.monotonic() < deadline and proc.poll() is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                        status = answer.status
                except urllib.error.HTTPError as exc:
                    status = exc.code  # it answers: started (ingestion may still be connecting)
                except OSError:
                    time.sleep(0.2)  # not listening yet: a process start has no event to await from outside
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert status in (200, 503)
        finally:
            proc.terminate()
            proc.wait(30)
