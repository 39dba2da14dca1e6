"""``civicedge edge install``: a gateway bundle (``tools/flash.py gateway-bundle``) becomes a running appliance.

What lands where (``prefix`` is ``/`` on a gateway; tests install into a scratch root)::

    /opt/civicedge/venv/            Python and the packages (root's: the service cannot change its own launcher)
    /opt/civicedge/app/             updates.root — versions/<v>/, current → the running one (the service's)
    /etc/civicedge/config.yaml      from the bundle (the agent rewrites it for set-config)
    /etc/civicedge/secrets/         the broker password and the gateway's own signing key (0600)
    /var/lib/civicedge/             the agent's state: outbox, pinned keys, galleries (StateDirectory=)
    /etc/systemd/system/civicedge-agent.service

The unit runs ``civicedge edge launch`` (A/B updates and roll-back) as ``Type=notify`` with a watchdog: the
agent says READY once its units run and pings from its event loop (:mod:`edge.systemd`). Hardening leaves the
three writable places above writable and everything else read-only; ``/dev`` stays open to the service's groups
(serial ports, GPIO chips, camera, I²C), because a device allow-list (``PrivateDevices=``, ``DeviceAllow=``,
``ProtectClock=`` which implies one) shuts out the hardware a gate drives.

Every step is safe to run again: existing secrets and a config the agent has changed are kept, an installed
version is not replaced (updates do that).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SERVICE = "civicedge-agent"
USER = "civicedge"
#: serial ports, GPIO chips, cameras, I²C buses (Raspberry Pi OS has them all; Debian and JetPack lack some)
GROUPS = ("dialout", "gpio", "video", "i2c")
WATCHDOG_S = 30
#: a full-size Pi's bcm2835 watchdog accepts at most 15 s
HARDWARE_WATCHDOG_S = 15

UNIT = """\
# {service}.service — written by `civicedge edge install`; docs/deployment.md explains each setting.
[Unit]
Description=CivicEdge gateway agent ({device})
Documentation=file://{docs}
After=network-online.target time-sync.target
Wants=network-online.target
# a gateway keeps trying: never give up into "failed" after a burst of restarts
StartLimitIntervalSec=0

[Service]
Type=notify
# the launcher is the main process; the agent it runs (its child) sends READY and the watchdog pings
NotifyAccess=all
ExecStart={venv}/bin/civicedge edge launch --root {app} --config {etc}/config.yaml
Restart=always
RestartSec=5
WatchdogSec={watchdog}
TimeoutStartSec=180
TimeoutStopSec=30
# SIGTERM to the launcher, which stops the agent cleanly; whatever is left gets SIGKILL at the timeout
KillMode=mixed
User={user}
Group={user}
SupplementaryGroups={groups}
Environment=PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
StateDirectory=civicedge
StateDirectoryMode=0750
UMask=0027
# writable: the state, the A/B versions (updates), the config (set-config, set-credentials)
ReadWritePaths={app} {etc}
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateMounts=yes
ProtectProc=invisible
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
RemoveIPC=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@clock @mount @reboot @swap @privileged
SystemCallErrorNumber=EPERM
LogRateLimitIntervalSec=30s
LogRateLimitBurst=2000

[Install]
WantedBy=multi-user.target
"""

#: journald: a size cap so logs never fill the card, and nothing kept across a power cut that would wear it
JOURNALD = """\
# written by `civicedge edge install` (docs/deployment.md#logs): logs of a gateway stay small
[Journal]
SystemMaxUse={max_use}
SystemKeepFree=256M
MaxRetentionSec=1month
SyncIntervalSec=5m
"""

#: systemd feeds the board's hardware watchdog: a hung kernel or systemd reboots the gateway
SYSTEM_WATCHDOG = """\
# written by `civicedge edge install --hardware-watchdog` (docs/deployment.md#watchdogs)
[Manager]
RuntimeWatchdogSec={seconds}
RebootWatchdogSec=2min
"""


class InstallError(Exception):
    """The install cannot go on: the message names the problem and the fix."""


@dataclass
class Layout:
    prefix: Path = Path("/")
    venv: Path = field(default_factory=lambda: Path(sys.prefix))
    app: Path = Path("/opt/civicedge/app")
    etc: Path = Path("/etc/civicedge")
    state: Path = Path("/var/lib/civicedge")
    user: str = USER
    groups: tuple[str, ...] = GROUPS

    def on_disk(self, path: Path) -> Path:
        """Where an absolute path of the gateway lies under ``prefix``."""
        return self.prefix / path.relative_to("/")

    @property
    def unit_path(self) -> Path:
        return self.on_disk(Path(f"/etc/systemd/system/{SERVICE}.service"))


def render_unit(layout: Layout, device: str, watchdog_s: int = WATCHDOG_S) -> str:
    docs = layout.venv.parent / "docs" / "deployment.md"
    return UNIT.format(
        service=SERVICE,
        device=device,
        docs=docs,
        venv=layout.venv,
        app=layout.app,
        etc=layout.etc,
        user=layout.user,
        groups=" ".join(layout.groups),
        watchdog=watchdog_s,
    )


# --- steps ------------------------------------------------------------------------------------------------------

Say = Callable[[str], None]


def _run(cmd: list[str], what: str) -> None:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise InstallError(f"{what}: {cmd[0]} is not installed (apt-get install passwd)") from None
    if res.returncode != 0:
        raise InstallError(f"{what} failed ({' '.join(cmd)}): {res.stderr.strip() or res.stdout.strip()}")


def _prefix_args(layout: Layout) -> list[str]:
    return [] if layout.prefix == Path("/") else ["--prefix", str(layout.prefix)]


def _entries(path: Path) -> dict[str, list[str]]:
    """name → fields of an /etc/passwd or /etc/group under the prefix (not NSS: the prefix may be a staging root)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    return {f[0]: f for f in (line.split(":") for line in lines) if f and f[0]}


def ensure_account(layout: Layout, say: Say) -> tuple[int, int]:
    """The service user (a system account, no login) and its hardware groups; its uid and gid."""
    groups = _entries(layout.on_disk(Path("/etc/group")))
    for g in layout.groups:
        if g not in groups:
            _run(["groupadd", *_prefix_args(layout), "--system", g], f"creating group {g}")
            say(f"created group {g}")
    users = _entries(layout.on_disk(Path("/etc/passwd")))
    if layout.user not in users:
        _run(
            [
                "useradd",
                *_prefix_args(layout),
                "--system",
                "--no-create-home",
                "--home-dir",
                str(layout.state),
                "--shell",
                "/usr/sbin/nologin",
                "--user-group",
                layout.user,
            ],
            f"creating user {layout.user}",
        )
        say(f"created system user {layout.user}")
    _run(
        ["usermod", *_prefix_args(layout), "--append", "--groups", ",".join(layout.groups), layout.user],
        f"adding {layout.user} to {', '.join(layout.groups)}",
    )
    entry = _entries(layout.on_disk(Path("/etc/passwd")))[layout.user]
    return int(entry[2]), int(entry[3])


def _own(path: Path, uid: int, gid: int, mode: int) -> None:
    os.chown(path, uid, gid)
    path.chmod(mode)


def read_bundle(bundle: Path) -> tuple[dict[str, object], str]:
    """The bundle's config and device id; refuses a folder that is not a gateway bundle."""
    cfg = bundle / "config.yaml"
    if not cfg.is_file():
        raise InstallError(
            f"{bundle} is not a gateway bundle (no config.yaml): make one with tools/flash.py gateway-bundle and "
            "copy the whole folder to the gateway"
        )
    try:
        doc = yaml.safe_load(cfg.read_text())
        device = str(doc["device"]["id"])
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise InstallError(f"{cfg} is not a gateway config ({exc}); make the bundle again") from None
    return doc, device


def install_files(bundle: Path, layout: Layout, uid: int, gid: int, say: Say) -> None:
    """/etc/civicedge from the bundle. Secrets already there stay (the cloud holds their public halves); a config
    already there stays too (the agent may have changed it) and the bundle's is left beside it."""
    etc = layout.on_disk(layout.etc)
    etc.mkdir(parents=True, exist_ok=True)
    _own(etc, uid, gid, 0o750)
    secrets = etc / "secrets"
    secrets.mkdir(exist_ok=True)
    _own(secrets, uid, gid, 0o700)
    for src in sorted((bundle / "secrets").glob("*")) if (bundle / "secrets").is_dir() else []:
        dest = secrets / src.name
        if dest.exists() and dest.read_bytes() != src.read_bytes():
            say(f"kept {layout.etc}/secrets/{src.name} (already there; differs from the bundle's)")
            continue
        shutil.copyfile(src, dest)
        _own(dest, uid, gid, 0o600)
    for name in ("ca.pem",):
        if (bundle / name).exists():
            shutil.copyfile(bundle / name, etc / name)
            _own(etc / name, uid, gid, 0o640)
    dest = etc / "config.yaml"
    new = (bundle / "config.yaml").read_bytes()
    if dest.exists() and dest.read_bytes() != new:
        (etc / "config.yaml.bundle").write_bytes(new)
        _own(etc / "config.yaml.bundle", uid, gid, 0o640)
        say(f"kept {layout.etc}/config.yaml (changed since); the bundle's is beside it as config.yaml.bundle")
    else:
        dest.write_bytes(new)
        _own(dest, uid, gid, 0o640)
    state = layout.on_disk(layout.state)
    state.mkdir(parents=True, exist_ok=True)
    _own(state, uid, gid, 0o750)


def install_version(app: Path, src: Path, version: str) -> Path:
    """Copy this installation's ``edge`` and ``protocol`` as version ``version`` and point ``current`` at it."""
    from edge.updater import switch

    dest = app / "versions" / version
    for pkg in ("edge", "protocol"):
        shutil.copytree(src / pkg, dest / pkg, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    switch(app, version)
    return dest


def install_app(layout: Layout, uid: int, gid: int, say: Say) -> None:
    from edge import __version__

    app = layout.on_disk(layout.app)
    app.mkdir(parents=True, exist_ok=True)
    if (app / "current").exists():
        say(f"kept the installed version {os.readlink(app / 'current').rsplit('/', 1)[-1]} (updates replace it)")
    else:
        install_version(app, Path(__file__).resolve().parent.parent, __version__)
        say(f"installed version {__version__} as the first A/B version")
    for path in [app, *app.rglob("*")]:
        if not path.is_symlink():
            os.chown(path, uid, gid)
        else:
            os.lchown(path, uid, gid)


def write_unit(layout: Layout, device: str, journal_max: str | None, hardware_watchdog: bool, say: Say) -> None:
    unit = layout.unit_path
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text(render_unit(layout, device))
    unit.chmod(0o644)
    say(f"wrote {unit.relative_to(layout.prefix)}")
    if journal_max:
        conf = layout.on_disk(Path("/etc/systemd/journald.conf.d/civicedge.conf"))
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(JOURNALD.format(max_use=journal_max))
        say(f"journald capped at {journal_max} ({conf.relative_to(layout.prefix)})")
    if hardware_watchdog:
        conf = layout.on_disk(Path("/etc/systemd/system.conf.d/civicedge-watchdog.conf"))
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(SYSTEM_WATCHDOG.format(seconds=HARDWARE_WATCHDOG_S))
        say(f"hardware watchdog: systemd feeds it every {HARDWARE_WATCHDOG_S // 2} s (takes effect at the next boot)")


def check_config(layout: Layout) -> str:
    """The installed config, read as the agent will read it (paths under the prefix when staging)."""
    from edge.config import ConfigError, load_config_raw

    path = layout.on_disk(layout.etc) / "config.yaml"
    try:
        _, cfg = load_config_raw(path)
    except ConfigError as exc:
        raise InstallError(f"the bundle's config does not load: {exc}") from None
    notes = []
    if cfg.updates is None or cfg.updates.root != layout.app:
        notes.append(f"updates.root is not {layout.app}: over-the-air updates will not reach the running version")
    if not str(cfg.outbox.path).startswith(str(layout.state) + "/"):
        notes.append(f"outbox.path {cfg.outbox.path} is outside {layout.state}: the service cannot write there")
    return "; ".join(notes)


def start(say: Say) -> None:
    if shutil.which("systemctl") is None or not Path("/run/systemd/system").is_dir():
        say("systemd is not running here: start it later with systemctl enable --now " + SERVICE)
        return
    _run(["systemctl", "daemon-reload"], "systemctl daemon-reload")
    _run(["systemctl", "enable", "--now", SERVICE], f"starting {SERVICE}")
    say(f"{SERVICE} enabled and started: journalctl -u {SERVICE} -f; systemctl status {SERVICE}")


def install(
    bundle: Path,
    layout: Layout,
    *,
    journal_max: str | None = "64M",
    hardware_watchdog: bool = False,
    start_service: bool = True,
    say: Say = print,
) -> str:
    """Run every step; returns the device id."""
    if os.geteuid() != 0:
        raise InstallError("run it as root: sudo /opt/civicedge/venv/bin/civicedge edge install --bundle …")
    _, device = read_bundle(bundle)
    ids: dict[str, int] = {}

    def account() -> None:
        ids["uid"], ids["gid"] = ensure_account(layout, say)

    steps: list[tuple[str, Callable[[], object]]] = [
        (f"service user {layout.user} and groups {', '.join(layout.groups)}", account),
        (f"{layout.etc} and {layout.state}", lambda: install_files(bundle, layout, ids["uid"], ids["gid"], say)),
        (f"the first version under {layout.app}", lambda: install_app(layout, ids["uid"], ids["gid"], say)),
        ("the config, as the agent reads it", lambda: _note(check_config(layout), say)),
        (f"the systemd unit {SERVICE}", lambda: write_unit(layout, device, journal_max, hardware_watchdog, say)),
    ]
    if start_service and layout.prefix == Path("/"):
        steps.append((f"start {SERVICE}", lambda: start(say)))
    for i, (title, step) in enumerate(steps, 1):
        say(f"[{i}/{len(steps)}] {title}")
        step()
    return device


def _note(text: str, say: Say) -> None:
    say(f"warning: {text}" if text else "config loads")
