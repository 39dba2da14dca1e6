"""``civicedge edge doctor``: the gateway's self-check — what a technician runs on site (and the installer
and the aarch64 proof run) before trusting a box at a gate.

Each check returns ``ok``, ``warn`` or ``fail`` with a line saying what was found and, when it is not ok, what
to do. Nothing here changes the gateway except a scratch SQLite file it deletes again.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from edge.config import AgentConfig, ConfigError, load_config_raw

#: the edge extra's modules: (import name, what needs it, required for any gateway)
PACKAGES: tuple[tuple[str, str, bool], ...] = (
    ("pydantic", "config and messages", True),
    ("cryptography", "signatures", True),
    ("orjson", "messages", True),
    ("yaml", "config", True),
    ("sqlite_utils", "the outbox", True),
    ("aiomqtt", "the uplink", True),
    ("psutil", "health", True),
    ("numpy", "vision and thermal", False),
    ("ai_edge_litert", "face and thermal models (LiteRT)", False),
    ("PIL", "photos", False),
    ("cv2", "cameras", False),
    ("serial", "serial I/O boards", False),
    ("pymodbus", "PLCs", False),
    ("gpiozero", "GPIO relays", False),
)
MIN_PYTHON = (3, 11)
MIN_FREE_BYTES = 200 * 1024 * 1024
#: the groups a gateway's service user needs for its hardware (edge.appliance adds them)
HARDWARE_GROUPS = ("dialout", "gpio", "video", "i2c")


@dataclass
class Check:
    name: str
    state: str  # ok | warn | fail
    detail: str
    ms: float = 0.0


def _timed(name: str, fn: Callable[[], tuple[str, str]]) -> Check:
    t0 = time.perf_counter()
    try:
        state, detail = fn()
    except Exception as exc:  # a check that breaks is a failed check, not a crashed doctor
        state, detail = "fail", f"{type(exc).__name__}: {exc}"
    return Check(name, state, detail, round((time.perf_counter() - t0) * 1000, 1))


def _platform() -> tuple[str, str]:
    release = ""
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                release = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    detail = f"{platform.machine()}, Python {platform.python_version()}, {release or platform.system()}"
    if sys.version_info[:2] < MIN_PYTHON:
        return "fail", detail + ": Python 3.11 or newer is needed (docs/deployment.md#jetson)"
    return "ok", detail


def _version(module: str, mod: Any) -> str:
    version = getattr(mod, "__version__", None)
    if isinstance(version, str):
        return version
    for dist in metadata.packages_distributions().get(module, []):
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(dist)
    return "?"


def _package(module: str, needed_for: str, required: bool) -> Callable[[], tuple[str, str]]:
    def check() -> tuple[str, str]:
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            fix = f"missing ({exc}): pip install 'civicedge[edge]'"
            return ("fail" if required else "warn"), f"{fix} — needed for {needed_for}"
        return "ok", f"{_version(module, mod)} ({needed_for})"

    return check


def _models() -> Iterator[Check]:
    try:
        import numpy as np

        from edge.inference import MODELS, Model
    except ImportError as exc:
        yield Check("litert", "fail", f"LiteRT or numpy missing ({exc}): pip install 'civicedge[edge]'")
        return
    thermal = Path(__file__).resolve().parent / "thermal" / "models"
    for path in [*sorted(MODELS.glob("*.tflite")), *sorted(thermal.glob("*.tflite"))]:

        def load(path: Path = path) -> tuple[str, str]:
            model = Model(path, threads=1)
            x = np.zeros(model.input_shape, dtype=np.float32)
            model.run(x)
            return "ok", f"loaded and ran once in {model.last_ms:.0f} ms (input {list(model.input_shape)})"

        yield _timed(f"model {path.stem}", load)


def _sqlite(folder: Path) -> tuple[str, str]:
    if not folder.is_dir():
        return "fail", f"{folder} does not exist: civicedge edge install makes it (or fix outbox.path)"
    with tempfile.TemporaryDirectory(dir=folder, prefix=".doctor-") as tmp:
        conn = sqlite3.connect(Path(tmp) / "check.db", isolation_level=None)
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("CREATE TABLE t (x)")
            conn.execute("INSERT INTO t VALUES (1)")
        finally:
            conn.close()
    if mode != "wal":
        return "fail", f"{folder}: journal mode {mode}, not wal (a filesystem without shared memory?)"
    return "ok", f"SQLite {sqlite3.sqlite_version}, WAL and fsync work in {folder}"


def _disk(folder: Path) -> tuple[str, str]:
    free = shutil.disk_usage(folder if folder.exists() else folder.parent).free
    text = f"{free / 1e6:.0f} MB free under {folder}"
    if free < MIN_FREE_BYTES:
        return "warn", text + f": below {MIN_FREE_BYTES // 10**6} MB; old logs (journalctl --vacuum-size=…) or images?"
    return "ok", text


def _clock() -> tuple[str, str]:
    from civicedge import __version__

    now = time.time()
    if now < 1_767_225_600:  # 2026-01-01: older than this release
        return "fail", (
            f"the clock says {time.strftime('%Y-%m-%d', time.gmtime(now))}: signed commands will be refused; "
            "set it (timedatectl set-ntp true, or an RTC on the board)"
        )
    return "ok", f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(now))} UTC (agent {__version__})"


def _devices(raw: dict[str, Any]) -> Iterator[Check]:
    """Every /dev path the config names: present and readable/writable by this user."""
    seen: set[str] = set()

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for v in node.values():
                yield from walk(v)
        elif isinstance(node, list):
            for v in node:
                yield from walk(v)
        elif isinstance(node, str) and node.startswith("/dev/"):
            yield node

    for dev in walk(raw):
        if dev in seen:
            continue
        seen.add(dev)
        if not os.path.exists(dev):
            yield Check(f"device {dev}", "fail", "not present: is it plugged in, and is its overlay enabled?")
        elif not os.access(dev, os.R_OK | os.W_OK):
            yield Check(
                f"device {dev}",
                "fail",
                f"no access for this user: add it to the device's group ({', '.join(HARDWARE_GROUPS)})",
            )
        else:
            yield Check(f"device {dev}", "ok", "present, read/write")


def _config(path: Path) -> tuple[Check, AgentConfig | None, dict[str, Any]]:
    try:
        raw, cfg = load_config_raw(path)
    except ConfigError as exc:
        return Check("config", "fail", str(exc)), None, {}
    try:
        key = cfg.device.signing_key()
    except ConfigError as exc:
        return Check("config", "fail", str(exc)), cfg, raw
    detail = f"{path}: device {cfg.device.site}/{cfg.device.id}, {len(cfg.units)} unit(s)"
    if key is None:
        return Check("config", "warn", detail + "; no signing key (civicedge edge keygen)"), cfg, raw
    return Check("config", "ok", detail + "; signing key readable"), cfg, raw


def run_checks(config: Path | None = None, state_dir: Path | None = None) -> list[Check]:
    checks = [_timed("platform", _platform), _timed("clock", _clock)]
    checks += [_timed(f"package {m}", _package(m, why, req)) for m, why, req in PACKAGES]
    checks += list(_models())
    raw: dict[str, Any] = {}
    if config is None:
        checks.append(Check("config", "warn", "none checked: pass --config /etc/civicedge/config.yaml"))
    else:
        check, cfg, raw = _config(config)
        checks.append(check)
        if cfg is not None and state_dir is None:
            state_dir = cfg.outbox.path.resolve().parent
    folder = state_dir or Path(tempfile.gettempdir())
    checks.append(_timed("storage", lambda: _sqlite(folder)))
    checks.append(_timed("disk", lambda: _disk(folder)))
    checks += list(_devices(raw))
    return checks


def report(checks: list[Check]) -> dict[str, Any]:
    return {
        "ok": not any(c.state == "fail" for c in checks),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "checks": [asdict(c) for c in checks],
    }
