#!/usr/bin/env python3
"""CivicEdge field tool: find boards, flash MicroPython, deploy the firmware, give a device its identity,
check that the cloud sees it, build a gateway's bundle, replace a broken board.

    python tools/flash.py --help
    python tools/flash.py detect
    python tools/flash.py provision --port /dev/ttyUSB0 --site riverside --claim ce-claim-… --app manhole_node
    python tools/flash.py deploy --port /dev/ttyUSB0 --app manhole_node
    python tools/flash.py verify --device manhole-3fa2c1

Every step says what it does and is safe to run again: finished steps are recorded in the state directory
(``--state``, default ``./flash-state``; files hold credentials and are mode 0600) and skipped on a rerun.
``--dry-run`` prints what would happen and changes nothing. Errors name the problem and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
# app name → (firmware folder, device kind in the cloud, does it speak MQTT itself)
APPS: dict[str, tuple[str, str, bool]] = {
    "manhole_node": ("manhole", "manhole", True),
    "io_board": ("ioboard", "ioboard", False),
    "elevator_car": ("carboard", "elevator_car", False),
}
# USB vendor:product → what is usually behind it
USB_GUESSES: dict[tuple[int, int], str] = {
    (0x10C4, 0xEA60): "ESP32 (CP210x bridge)",
    (0x1A86, 0x7523): "ESP32 (CH340 bridge)",
    (0x1A86, 0x55D4): "ESP32 (CH9102 bridge)",
    (0x303A, 0x1001): "ESP32-S3/C3 (native USB)",
    (0x303A, 0x4001): "ESP32-S2 (native USB)",
    (0x2E8A, 0x0005): "RP2040 running MicroPython",
    (0x2E8A, 0x0003): "RP2040 in UF2 bootloader",
    (0x0403, 0x6001): "FTDI serial (I/O board or RS-485 adapter)",
    (0x0403, 0x6015): "FTDI serial (I/O board or RS-485 adapter)",
}

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.split("\n\n")[0])


class Fail(Exception):
    """A step that cannot go on; the message says why and what to do."""


# --- output ----------------------------------------------------------------------------------------------------


class Steps:
    """Numbered progress lines; finished steps recorded in a state file so a rerun skips them."""

    def __init__(self, state_dir: Path, key: str, total: int, dry_run: bool) -> None:
        self.path = state_dir / f"{key}.json"
        self.total, self.n, self.dry_run = total, 0, dry_run
        self.state: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def begin(self, title: str) -> None:
        self.n += 1
        typer.echo(f"[{self.n}/{self.total}] {title}", nl=False)

    def done(self, note: str = "done") -> None:
        typer.echo(f" … {note}")

    def skip(self, note: str) -> None:
        typer.echo(f" … already done ({note})")

    def would(self, what: str) -> None:
        typer.echo(f" … would {what}")

    def save(self, **values: Any) -> None:
        if self.dry_run:
            return
        self.state.update(values)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.state, f, indent=1)
        os.replace(tmp, self.path)


def _run(cmd: list[str], what: str, timeout: float = 120) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise Fail(f"{cmd[0]} is not installed: pip install mpremote esptool (or make venv)") from None
    except subprocess.TimeoutExpired:
        raise Fail(f"{what} took longer than {timeout:.0f} s: check the cable and that the board is not busy") from None
    if r.returncode != 0:
        detail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        raise Fail(f"{what} failed: {detail[0]}")
    return r.stdout


def _mpremote(port: str, *args: str, what: str) -> str:
    return _run([sys.executable, "-m", "mpremote", "connect", port, *args], what)


def _cloud(url: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=15)


def _call(client: httpx.Client, method: str, path: str, **kw: Any) -> Any:
    try:
        r = client.request(method, path, **kw)
    except httpx.HTTPError as exc:
        raise Fail(f"cannot reach the cloud at {client.base_url}: {exc} (check --cloud and the network)") from None
    if r.status_code >= 400:
        try:
            reason = r.json().get("error", r.text)
        except ValueError:
            reason = r.text[:200]
        raise Fail(f"the cloud answered {r.status_code}: {reason}")
    return r.json()


def _fail(exc: Fail) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


StateDir = Annotated[Path, typer.Option("--state", help="where finished steps and identities are kept (0600)")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="print what would happen; change nothing")]
Cloud = Annotated[str, typer.Option("--cloud", envvar="CE_CLOUD_URL", help="the cloud's address")]
Token = Annotated[str | None, typer.Option("--token", envvar="CE_API_TOKEN", help="API token (for verify)")]


# --- detect ----------------------------------------------------------------------------------------------------


@app.command()
def detect(as_json: Annotated[bool, typer.Option("--json", help="machine-readable")] = False) -> None:
    """List serial ports with a guess of the board behind each."""
    from serial.tools import list_ports

    rows = []
    for p in sorted(list_ports.comports(), key=lambda p: p.device):
        guess = USB_GUESSES.get((p.vid or 0, p.pid or 0), "unknown (not a USB board we know)" if p.vid else "")
        rows.append(
            {
                "port": p.device,
                "vid_pid": f"{p.vid:04x}:{p.pid:04x}" if p.vid else "",
                "serial": p.serial_number or "",
                "description": p.description or "",
                "guess": guess,
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        return
    if not rows:
        typer.echo("no serial ports found: plug the board in (a data cable, not a charging-only one)")
        return
    for r in rows:
        typer.echo(f"{r['port']:<16} {r['vid_pid']:<10} {r['guess'] or r['description']}")


# --- flash MicroPython -------------------------------------------------------------------------------------------


@app.command("flash-micropython")
def flash_micropython(
    port: Annotated[str, typer.Option(help="serial port (ESP32) — see detect")],
    firmware: Annotated[Path, typer.Option(help="MicroPython image: .bin (ESP32) or .uf2 (RP2040)")],
    chip: Annotated[str, typer.Option(help="esp32, esp32s3, esp32c3 or rp2040")] = "esp32",
    drive: Annotated[Path | None, typer.Option(help="RP2040: the RPI-RP2 drive (default: found under /media)")] = None,
    dry_run: DryRun = False,
) -> None:
    """Write MicroPython to a board: esptool for ESP32 (erase, then write), a UF2 copy for RP2040."""
    try:
        if not firmware.is_file():
            raise Fail(f"no firmware file {firmware}: download it from micropython.org/download for your board")
        if chip == "rp2040":
            if firmware.suffix != ".uf2":
                raise Fail("an RP2040 takes a .uf2 image")
            target = drive or next(iter(Path("/media").glob("*/RPI-RP2")), None)
            if target is None:
                raise Fail("no RPI-RP2 drive: hold BOOTSEL while plugging the board in, then try again")
            typer.echo(f"copy {firmware} to {target}")
            if not dry_run:
                shutil.copy(firmware, target / firmware.name)
            return
        offset = {"esp32": "0x1000", "esp32s3": "0x0", "esp32c3": "0x0"}.get(chip)
        if offset is None:
            raise Fail(f"unknown chip {chip}: esp32, esp32s3, esp32c3 or rp2040")
        cmds = [
            [sys.executable, "-m", "esptool", "--chip", chip, "--port", port, "erase-flash"],
            [
                sys.executable,
                "-m",
                "esptool",
                "--chip",
                chip,
                "--port",
                port,
                "--baud",
                "460800",
                "write-flash",
                "-z",
                offset,
                str(firmware),
            ],
        ]
        for i, cmd in enumerate(cmds, 1):
            typer.echo(f"[{i}/{len(cmds)}] {' '.join(cmd[2:])}")
            if not dry_run:
                _run(cmd, "esptool", timeout=300)
    except Fail as exc:
        _fail(exc)


# --- identities --------------------------------------------------------------------------------------------------


def _provision(
    steps: Steps,
    cloud: str,
    claim: str,
    kind: str,
    device_id: str | None,
    dry_run: bool,
    signing_key: str | None = None,
) -> dict[str, Any]:
    steps.begin(f"get an identity from {cloud} with the claim token")
    if "identity" in steps.state:
        steps.skip(steps.state["identity"]["device_id"])
        return dict(steps.state["identity"])
    if dry_run:
        steps.would(f"POST {cloud}/provision (kind {kind}{', id ' + device_id if device_id else ''})")
        return {
            "device_id": device_id or f"<new {kind}>",
            "site_id": "<site>",
            "mqtt": {},
            "ca_pem": None,
            "command_public_key": "",
            "config": {},
        }
    with _cloud(cloud, None) as c:
        body = {"claim": claim, "kind": kind, "device_id": device_id}
        if signing_key:
            body["signing_key"] = signing_key  # the public half of the key the device signs its messages with
        ident = _call(c, "POST", "/provision", json=body)
    steps.save(identity=ident)
    steps.done(f"{ident['device_id']} at {ident['site_id']}")
    return dict(ident)


def _board_config(ident: dict[str, Any], settings: list[str]) -> dict[str, Any]:
    m = ident.get("mqtt", {})
    cfg: dict[str, Any] = {
        "site": ident["site_id"],
        "device": ident["device_id"],
        "broker_host": m.get("host"),
        "broker_port": m.get("port"),
    }
    if m.get("username"):
        cfg |= {"mqtt_user": m["username"], "mqtt_password": m["password"]}
    if ident.get("ca_pem"):  # TLS to the broker's TLS listener, its certificate checked against the project CA
        cfg["mqtt_ca"] = ident["ca_pem"]
    for s in settings:
        key, _, value = s.partition("=")
        if not key or not _:
            raise Fail(f"--set takes key=value, not {s!r}")
        try:
            cfg[key] = json.loads(value)
        except ValueError:
            cfg[key] = value
    return cfg


def _write_board_file(port: str, name: str, data: bytes, what: str) -> None:
    with tempfile.TemporaryDirectory() as d:
        local = Path(d) / Path(name).name
        fd = os.open(local, os.O_WRONLY | os.O_CREAT, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        _mpremote(port, "fs", "cp", str(local), f":{name}", what=what)


@app.command()
def provision(
    port: Annotated[str, typer.Option(help="the board's serial port")],
    site: Annotated[str, typer.Option(help="the site the claim token is for (checked against the answer)")],
    claim: Annotated[str, typer.Option(envvar="CE_CLAIM", help="single-use claim token from the console/API")],
    app_name: Annotated[str, typer.Option("--app", help=", ".join(APPS))] = "manhole_node",
    device_id: Annotated[str | None, typer.Option(help="keep this device id (a replacement board)")] = None,
    cloud: Cloud = "http://127.0.0.1:8000",
    setting: Annotated[list[str], typer.Option("--set", help="extra config key=value for the board")] = [],  # noqa: B006
    state: StateDir = Path("flash-state"),
    dry_run: DryRun = False,
) -> None:
    """Give a board its identity: register it with the claim token and write config.json onto it."""
    try:
        if app_name not in APPS:
            raise Fail(f"unknown app {app_name}: one of {', '.join(APPS)}")
        steps = Steps(state, f"board-{Path(port).name}", 2, dry_run)
        ident = _provision(steps, cloud, claim, APPS[app_name][1], device_id, dry_run)
        if not dry_run and ident["site_id"] != site:
            raise Fail(f"the claim token is for site {ident['site_id']}, not {site}")
        cfg = _board_config(ident, setting)
        steps.begin(f"write config.json to the board on {port}")
        if dry_run:
            steps.would(f"write config.json ({', '.join(sorted(cfg))}) to the board")
        else:
            _write_board_file(port, "config.json", json.dumps(cfg).encode(), "writing config.json")
            steps.save(config_written=True, app=app_name)
            steps.done()
    except Fail as exc:
        _fail(exc)


@app.command()
def deploy(
    port: Annotated[str, typer.Option(help="the board's serial port")],
    app_name: Annotated[str, typer.Option("--app", help=", ".join(APPS))],
    state: StateDir = Path("flash-state"),
    dry_run: DryRun = False,
) -> None:
    """Copy the firmware (lib/ and the app's main.py) to the board; unchanged files already copied are skipped."""
    try:
        if app_name not in APPS:
            raise Fail(f"unknown app {app_name}: one of {', '.join(APPS)}")
        folder = FIRMWARE / APPS[app_name][0]
        files = [(p, f"lib/{p.name}") for p in sorted((FIRMWARE / "lib").glob("*.py"))]
        files.append((folder / "main.py", "main.py"))
        steps = Steps(state, f"board-{Path(port).name}", len(files) + 1, dry_run)
        copied: dict[str, str] = dict(steps.state.get("copied", {}))
        steps.begin(f"prepare the board on {port}")
        if dry_run:
            steps.would("make :lib")
        else:
            _mpremote(port, "exec", "import os\ntry:\n os.mkdir('lib')\nexcept OSError:\n pass", what="making lib/")
            steps.done()
        for local, remote in files:
            digest = hashlib.sha256(local.resolve().read_bytes()).hexdigest()
            steps.begin(f"copy {remote}")
            if copied.get(remote) == digest:
                steps.skip("unchanged")
                continue
            if dry_run:
                steps.would(f"copy {local.relative_to(ROOT)} → :{remote}")
                continue
            _write_board_file(port, remote, local.resolve().read_bytes(), f"copying {remote}")
            copied[remote] = digest
            steps.save(copied=copied, app=app_name)
            steps.done()
        if not dry_run:
            typer.echo(f"deployed {app_name}: reset the board (or press EN/RST) to start it")
    except Fail as exc:
        _fail(exc)


# runs on the board: hashes of the staged files (what the manifest says they must be)
_BOARD_HASHES = """
import hashlib, binascii, json
def _h(p):
    d = hashlib.sha256()
    with open(p, 'rb') as f:
        while True:
            b = f.read(512)
            if not b:
                break
            d.update(b)
    return binascii.hexlify(d.digest()).decode()
M = json.loads({manifest!r})
print(json.dumps([p for p in M if _h('next/' + p) != M[p]]))
"""
# runs on the board: keep the running files as prev/, move next/ into place, record the versions
_BOARD_SWITCH = """
import os, json
def _rm(p):
    try:
        if os.stat(p)[0] & 0x4000:
            for n in os.listdir(p):
                _rm(p + '/' + n)
            os.rmdir(p)
        else:
            os.remove(p)
    except OSError:
        pass
def _mv(a, b):
    parts = b.split('/')
    for i in range(1, len(parts)):
        try:
            os.mkdir('/'.join(parts[:i]))
        except OSError:
            pass
    os.rename(a, b)
M = json.loads({manifest!r})
_rm('prev')
os.mkdir('prev')
for p in M:
    try:
        _mv(p, 'prev/' + p)
    except OSError:
        pass
for p in M:
    _mv('next/' + p, p)
_rm('next')
try:
    old = json.load(open('version.json'))
except (OSError, ValueError):
    old = {{}}
json.dump({{'version': {version!r}, 'previous': old.get('version'), 'files': list(M)}}, open('version.json', 'w'))
print('switched')
"""
_BOARD_ROLLBACK = """
import os, json
v = json.load(open('version.json'))
for p in v['files']:
    try:
        os.rename('prev/' + p, p)
    except OSError:
        pass
json.dump({'version': v.get('previous'), 'previous': None, 'files': v['files']}, open('version.json', 'w'))
print('rolled back to', v.get('previous'))
"""


def _update_key(state: Steps, key: str | None) -> Any:
    from protocol.signing import load_public_key

    b64 = key or state.state.get("identity", {}).get("update_public_key")
    if not b64:
        raise Fail("no update key: pass --update-key (the cloud's update public key) or provision the board first")
    return load_public_key(b64)


@app.command("deploy-bundle")
def deploy_bundle(
    port: Annotated[str, typer.Option(help="the board's serial port")],
    bundle: Annotated[Path, typer.Option(help="signed bundle for this board's app (civicedge cloud bundle)")],
    app_name: Annotated[str, typer.Option("--app", help=", ".join(APPS))] = "manhole_node",
    update_key: Annotated[
        str | None, typer.Option(help="update public key (default: from the board's identity)")
    ] = None,
    state: StateDir = Path("flash-state"),
    dry_run: DryRun = False,
) -> None:
    """Install a signed firmware bundle on a board: checked here, staged in :next/, checked again on the board,
    then switched in with the running files kept in :prev/ (``rollback`` brings them back)."""
    from protocol.updates import BundleError, open_bundle

    try:
        steps = Steps(state, f"board-{Path(port).name}", 4, dry_run)
        steps.begin(f"check {bundle.name}")
        try:
            manifest, files = open_bundle(bundle.read_bytes(), _update_key(steps, update_key), kind=app_name)
        except OSError as exc:
            raise Fail(f"cannot read {bundle}: {exc.strerror}") from None
        except BundleError as exc:
            raise Fail(f"the bundle is refused ({exc.reason}): {exc.detail}") from None
        steps.done(f"{manifest.kind} {manifest.version}, {len(files)} files, signature good")
        steps.begin("stage the files in :next/")
        if dry_run:
            steps.would(f"copy {len(files)} files")
        else:
            _mpremote(port, "exec", "import os\ntry:\n os.mkdir('next')\nexcept OSError:\n pass", what="staging")
            dirs = sorted({str(Path(name).parent) for name in files if str(Path(name).parent) != "."})
            for d in dirs:
                _mpremote(
                    port, "exec", f"import os\ntry:\n os.mkdir('next/{d}')\nexcept OSError:\n pass", what="staging"
                )
            for name, data in sorted(files.items()):
                _write_board_file(port, f"next/{name}", data, f"staging {name}")
            steps.done()
        listing = json.dumps(manifest.files)
        steps.begin("check the staged files on the board")
        if dry_run:
            steps.would("compare sha256 on the board")
        else:
            out = _mpremote(port, "exec", _BOARD_HASHES.format(manifest=listing), what="checking on the board")
            bad = json.loads(out.strip().splitlines()[-1])
            if bad:
                raise Fail(f"files changed on the way to the board: {', '.join(bad)}; run deploy-bundle again")
            steps.done("all match")
        steps.begin("switch (the running files are kept in :prev/)")
        if dry_run:
            steps.would(f"switch to {manifest.version}")
            return
        _mpremote(port, "exec", _BOARD_SWITCH.format(manifest=listing, version=manifest.version), what="switching")
        steps.save(bundle_version=manifest.version)
        steps.done(f"{manifest.version}: reset the board to start it")
    except Fail as exc:
        _fail(exc)


@app.command()
def rollback(port: Annotated[str, typer.Option(help="the board's serial port")]) -> None:
    """Bring back the file set a bundle replaced (kept in :prev/)."""
    try:
        typer.echo(_mpremote(port, "exec", _BOARD_ROLLBACK, what="rolling back").strip())
    except Fail as exc:
        _fail(exc)


@app.command()
def verify(
    device: Annotated[str, typer.Option(help="device id")],
    cloud: Cloud = "http://127.0.0.1:8000",
    token: Token = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for it to come online")] = 120,
) -> None:
    """Wait until the cloud sees the device online, then show its health and first readings."""
    try:
        with _cloud(cloud, token) as c:
            typer.echo(f"waiting for {device} to come online (up to {timeout:.0f} s)", nl=False)
            deadline = time.monotonic() + timeout
            since = int(time.time() * 1000) - 5000
            while True:
                d = _call(c, "GET", f"/api/devices/{device}")
                # online (gateways announce it) or reporting now (sleepy nodes only connect to send)
                if d.get("status") == "online" or (d.get("last_seen_ms") or 0) >= since:
                    break
                if time.monotonic() > deadline:
                    raise Fail(
                        f"{device} is {d.get('status')} after {timeout:.0f} s: check power, the antenna or "
                        "cable, and the broker address in its config (python tools/flash.py provision …)"
                    )
                typer.echo(".", nl=False)
                time.sleep(1)
            typer.echo(f" {'online' if d.get('status') == 'online' else 'reporting'}")
            events = _call(c, "GET", "/api/events", params={"device": device, "limit": 10})["items"]
            readings = [e for e in events if e["type"] not in ("state",)]
            typer.echo(f"  last seen {d.get('last_seen_ms')}, version {d.get('agent_version') or '—'}")
            for e in reversed(readings[:5]):
                body = {k: v for k, v in e["body"].items() if v is not None}
                typer.echo(f"  {e['type']}: {json.dumps(body, ensure_ascii=False)[:160]}")
            if not readings:
                typer.echo("  online, no readings yet (a node sends its first one within a minute)")
    except Fail as exc:
        _fail(exc)


# --- gateways -----------------------------------------------------------------------------------------------------

#: the platforms a gateway's wheelhouse is for (pip's --platform tags, newest first); Python 3.11, CPython
WHEEL_PLATFORMS = {
    "aarch64": ["manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"],
    "x86_64": ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"],
}

INSTALL_SH = """#!/bin/sh
# Makes this machine a CivicEdge gateway from this bundle. On the gateway, as root:  sudo sh install.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
venv=/opt/civicedge/venv
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "error: Python 3.11 or newer is needed (docs/deployment.md, Jetson)" >&2; exit 2; }
[ -x "$venv/bin/python" ] || python3 -m venv "$venv" || {
    echo "error: cannot make $venv: apt-get install python3-venv" >&2; exit 2; }
# the civicedge wheel of this bundle by its path (never a package of that name from an index), its
# dependencies at the versions the project was tested with (wheels/constraints.txt)
whl=$(ls "$here"/wheels/civicedge-*.whl | head -n 1)
pins="$here/wheels/constraints.txt"
if [ -f "$here/wheels/COMPLETE" ]; then
    echo "installing from the bundle's wheelhouse (no network needed)"
    "$venv/bin/pip" install --quiet --no-index --find-links "$here/wheels" -c "$pins" "$whl[edge]"
else
    echo "installing civicedge from the bundle, its dependencies from PyPI"
    "$venv/bin/pip" install --quiet -c "$pins" "$whl[edge]"
fi
"$venv/bin/civicedge" edge install --bundle "$here" "$@"
# the self-check as the service itself (its groups, its files), not as root
runuser -u civicedge -- "$venv/bin/civicedge" edge doctor --config /etc/civicedge/config.yaml || true
"""


def _wheelhouse(dest: Path, machine: str | None) -> str:
    """The project's own wheel, and with ``machine`` every wheel the edge extra needs on that platform (Python
    3.11): a gateway with no internet installs from it."""
    import tomllib

    dest.mkdir(parents=True, exist_ok=True)
    for old in dest.glob("civicedge-*.whl"):
        old.unlink()
    shutil.copyfile(ROOT / "constraints.txt", dest / "constraints.txt")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dest),
            str(ROOT),
        ],
        "building the civicedge wheel",
        timeout=300,
    )
    if machine is None:
        return "the civicedge wheel (dependencies from PyPI at install)"
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*meta["dependencies"], *meta["optional-dependencies"]["edge"]]
    platforms = [a for p in WHEEL_PLATFORMS[machine] for a in ("--platform", p)]
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "-d",
            str(dest),
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            "--abi",
            "cp311",
            *platforms,
            "-c",
            str(ROOT / "constraints.txt"),
            *wanted,
        ],
        f"downloading the {machine} wheels (PyPI must be reachable from this laptop)",
        timeout=900,
    )
    (dest / "COMPLETE").write_text(f"{machine} cp311\n")
    n = len(list(dest.glob("*.whl")))
    return f"a wheelhouse of {n} wheels for {machine}, Python 3.11 (offline install)"


def _device_key(path: Path) -> str:
    """The gateway's own signing key, made once in its bundle (kept when a run is resumed); its public half."""
    from protocol.signing import generate_key, load_private_key, private_key_pem, public_key_b64

    if path.exists():
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        try:
            return public_key_b64(load_private_key(path.read_bytes()))
        except ValueError as exc:
            raise Fail(f"{path} is not a usable key ({exc}); remove it to make a new one") from None
    path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    path.parent.chmod(0o700)
    key = generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_key_pem(key))
    return public_key_b64(key)


@app.command("gateway-bundle")
def gateway_bundle(
    site: Annotated[str, typer.Option(help="the site the claim token is for")],
    claim: Annotated[str, typer.Option(envvar="CE_CLAIM", help="single-use claim token")],
    out: Annotated[Path, typer.Option(help="folder to write (copy it to the gateway's /etc/civicedge)")],
    kind: Annotated[str, typer.Option(help="gateway kind: gateway, gate, barrier, parking, elevator")] = "gateway",
    device_id: Annotated[str | None, typer.Option(help="keep this device id (a replacement gateway)")] = None,
    wheels: Annotated[
        str | None,
        typer.Option(help="also carry every dependency for this gateway's platform (aarch64, x86_64): offline install"),
    ] = None,
    cloud: Cloud = "http://127.0.0.1:8000",
    state: StateDir = Path("flash-state"),
    dry_run: DryRun = False,
) -> None:
    """Provision a Pi/Jetson gateway: config.yaml, the broker password and the gateway's own signing key (0600,
    its public half registered with the claim), the CA, the civicedge wheel (and with --wheels every dependency)
    and install.sh, which runs `civicedge edge install` on the gateway."""
    import yaml

    if wheels is not None and wheels not in WHEEL_PLATFORMS:
        _fail(Fail(f"--wheels {wheels}: say one of {', '.join(WHEEL_PLATFORMS)} (uname -m on the gateway)"))
    try:
        steps = Steps(state, f"gateway-{out.name}", 3, dry_run)
        signing_key = None if dry_run else _device_key(out / "secrets" / "signing-key.pem")
        registered = steps.state.get("signing_key")
        if signing_key and "identity" in steps.state and registered != signing_key:
            raise Fail(
                f"the key in {out / 'secrets' / 'signing-key.pem'} is not the one registered with the claim "
                f"({(registered or 'none')[:12]}…): copy the original bundle back, or ask for a new claim and run "
                "again with a new --state folder"
            )
        if signing_key and "identity" not in steps.state:
            steps.save(signing_key=signing_key)  # what the claim registers, to check a resumed run against
        ident = _provision(steps, cloud, claim, kind, device_id, dry_run, signing_key)
        if not dry_run and ident["site_id"] != site:
            raise Fail(f"the claim token is for site {ident['site_id']}, not {site}")
        steps.begin(f"write the bundle to {out}")
        if dry_run:
            steps.would(
                "make the gateway's own key (secrets/signing-key.pem, 0600); write config.yaml, "
                "secrets/mqtt-password (0600), ca.pem, install.sh, INSTALL.txt"
            )
            steps.begin("the wheels")
            steps.would(f"build the civicedge wheel{f' and download the {wheels} wheels' if wheels else ''}")
            return
        m = ident["mqtt"]
        mqtt: dict[str, Any] = {"host": m["host"], "port": m["port"]}
        out.mkdir(parents=True, exist_ok=True)
        (out / "secrets").mkdir(mode=0o700, exist_ok=True)
        if m.get("username"):
            secret = out / "secrets" / "mqtt-password"
            fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(m["password"] + "\n")
            mqtt |= {"username": m["username"], "password_file": "/etc/civicedge/secrets/mqtt-password"}
        if ident.get("ca_pem"):
            (out / "ca.pem").write_text(ident["ca_pem"])
            mqtt["tls"] = {"ca_file": "/etc/civicedge/ca.pem"}
        config = {
            "device": {
                "site": ident["site_id"],
                "id": ident["device_id"],
                "kind": kind,
                "signing_key_file": "/etc/civicedge/secrets/signing-key.pem",
            },
            "mqtt": mqtt,
            # the cloud's three public keys, pinned by the agent at its first start (docs/security.md#keys)
            "commands": {"public_key": ident["command_public_key"], "document_key": ident.get("document_public_key")},
            "updates": {"root": "/opt/civicedge/app", "public_key": ident.get("update_public_key")},
            "outbox": {"path": "/var/lib/civicedge/outbox.db"},
            **{k: v for k, v in ident.get("config", {}).items() if k != "device"},
        }
        (out / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        (out / "install.sh").write_text(INSTALL_SH)
        (out / "install.sh").chmod(0o755)
        (out / "INSTALL.txt").write_text(
            f"Gateway {ident['device_id']} at site {ident['site_id']}.\n\n"
            f"1. Copy this folder to the gateway (scp -r {out.name} pi@GATEWAY:); keep it private (its keys).\n"
            f"2. On the gateway: cd {out.name} && sudo sh install.sh\n"
            "   (on a Raspberry Pi add --hardware-watchdog: docs/deployment.md#watchdogs)\n"
            "3. Add the site's units (gate, barrier, lift, elevator) to /etc/civicedge/config.yaml, check with\n"
            "   sudo -u civicedge /opt/civicedge/venv/bin/civicedge edge doctor -c /etc/civicedge/config.yaml\n"
            "   and restart: sudo systemctl restart civicedge-agent\n"
            f"4. On the laptop: python tools/flash.py verify --device {ident['device_id']}\n"
        )
        steps.done(f"{ident['device_id']} (its own signing key made and registered)")
        steps.begin("the wheels")
        steps.done(_wheelhouse(out / "wheels", wheels))
        steps.save(bundle=str(out))
        typer.echo(f"next: see {out / 'INSTALL.txt'}")
    except Fail as exc:
        _fail(exc)


@app.command()
def replace(
    old: Annotated[str, typer.Option(help="the broken board's device id")],
    port: Annotated[str, typer.Option(help="the new board's serial port")],
    site: Annotated[str, typer.Option(help="the site")],
    claim: Annotated[str, typer.Option(envvar="CE_CLAIM", help="single-use claim token")],
    app_name: Annotated[str, typer.Option("--app", help=", ".join(APPS))] = "manhole_node",
    cloud: Cloud = "http://127.0.0.1:8000",
    state: StateDir = Path("flash-state"),
    dry_run: DryRun = False,
) -> None:
    """A new board takes over a broken one: same device id (history and asset link kept), new credentials
    (the old board's stop working), then the firmware."""
    provision(
        port=port,
        site=site,
        claim=claim,
        app_name=app_name,
        device_id=old,
        cloud=cloud,
        setting=[],
        state=state,
        dry_run=dry_run,
    )
    deploy(port=port, app_name=app_name, state=state, dry_run=dry_run)


if __name__ == "__main__":
    app()
