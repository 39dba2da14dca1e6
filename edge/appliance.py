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

import contextlib
import os
import re
import shutil
import stat
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
    return UNIT.format(
        service=SERVICE,
        device=device,
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


# --- files in folders the service owns ----------------------------------------------------------------------
# The service user owns /etc/civicedge, its secrets/, /var/lib/civicedge and /opt/civicedge/app. When root runs
# the installer again, a compromised agent may have left symlinks, hard links or FIFOs there to make root write,
# chown or read somewhere else. So every folder is opened with O_NOFOLLOW and every file through that folder's
# descriptor with O_NOFOLLOW (and O_NONBLOCK: a FIFO neither blocks nor is written), and ownership and modes
# are set on the open descriptors. Anything that is not a plain folder or a plain, singly linked file is
# refused. Their parents (/etc, /var/lib, /opt/civicedge) are root's and are not a risk.

_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
MAX_FILE = 1024 * 1024


def _open_dir(path: Path, uid: int, gid: int, mode: int, parent: int | None = None) -> int:
    """Make (if needed) and open a folder without following a link; set its owner and mode on the descriptor."""
    name: str | Path = path.name if parent is not None else path
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, mode, dir_fd=parent)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW, dir_fd=parent)
    except OSError as exc:
        raise InstallError(
            f"{path} is not a plain folder ({exc.strerror}): something replaced it with a link or a file; "
            "look at it, remove it and run the install again"
        ) from None
    os.fchown(fd, uid, gid)
    os.fchmod(fd, mode)
    return fd


def _checked(fd: int, where: str) -> None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise InstallError(f"{where} is not a plain file (a link, a FIFO or a device?): remove it and run again")


def _read(dir_fd: int, name: str, where: str) -> bytes | None:
    """A file's bytes (None: there is none), refusing links and anything but a plain file."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InstallError(f"{where}: {exc.strerror} (a link where a file should be?): remove it, run again") from None
    _checked(fd, where)
    with os.fdopen(fd, "rb") as f:
        return f.read(MAX_FILE)


def _write(dir_fd: int, name: str, data: bytes, uid: int, gid: int, mode: int, where: str) -> None:
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK | _NOFOLLOW, 0o600, dir_fd=dir_fd)
    except OSError as exc:
        raise InstallError(f"{where}: {exc.strerror} (a link where a file should be?): remove it, run again") from None
    _checked(fd, where)
    with os.fdopen(fd, "wb") as f:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        f.truncate(0)
        f.write(data)
        f.flush()
        os.fsync(fd)


def _bundle_file(path: Path) -> bytes:
    """A file of the bundle: a plain file, not a link to something of this machine's."""
    st = path.lstat()
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_FILE:
        raise InstallError(f"{path} is not a plain file of at most 1 MiB: the bundle is damaged; make it again")
    return path.read_bytes()


def _config_problem(text: bytes, where: str, layout: Layout) -> str | None:
    """Why a config cannot run under this layout (None: it can)."""
    from edge.config import ConfigError, expand_tree, load_yaml, parse_config

    try:
        cfg = parse_config(expand_tree(load_yaml(text.decode())), where)
    except (ConfigError, yaml.YAMLError, UnicodeDecodeError) as exc:
        return str(exc)
    if not cfg.outbox.path.is_relative_to(layout.state):
        return f"{where}: outbox.path {cfg.outbox.path} is outside {layout.state}, where the service may not write"
    return None


def read_bundle(bundle: Path, layout: Layout | None = None) -> tuple[dict[str, object], str]:
    """The bundle's config and device id; refuses a folder that is not a gateway bundle, or a config that would
    not run, before anything is changed."""
    from protocol.errors import ProtocolError
    from protocol.topics import validate_id

    cfg = bundle / "config.yaml"
    if not bundle.is_dir():
        raise InstallError(f"{bundle} does not exist or is not a folder: name the bundle folder gateway-bundle wrote")
    if not cfg.is_file():
        raise InstallError(
            f"{bundle} is not a gateway bundle (no config.yaml): make one with tools/flash.py gateway-bundle and "
            "copy the whole folder to the gateway"
        )
    text = _bundle_file(cfg)
    try:
        doc = yaml.safe_load(text)
        if not isinstance(doc, dict) or not isinstance(doc.get("device"), dict):
            raise ValueError("it has no device section")
        device = validate_id(str(doc["device"].get("id")), "device.id")
    except (yaml.YAMLError, ValueError, ProtocolError) as exc:
        raise InstallError(f"{cfg} is not a gateway config ({exc}); make the bundle again") from None
    problem = _config_problem(text, str(cfg), layout or Layout())
    if problem:
        raise InstallError(f"{problem} — fix {cfg} and run the install again (nothing was changed)")
    return doc, device


def install_files(bundle: Path, layout: Layout, uid: int, gid: int, say: Say, replace_secrets: bool = False) -> None:
    """/etc/civicedge from the bundle. Secrets already there stay (the cloud holds their public halves); a config
    already there stays too (the agent may have changed it) and the bundle's is left beside it."""
    layout.on_disk(layout.etc).parent.mkdir(parents=True, exist_ok=True)
    etc = _open_dir(layout.on_disk(layout.etc), uid, gid, 0o750)
    try:
        secrets = _open_dir(layout.on_disk(layout.etc) / "secrets", uid, gid, 0o700, parent=etc)
        try:
            src_dir = bundle / "secrets"
            for src in sorted(src_dir.iterdir()) if src_dir.is_dir() else []:
                data, where = _bundle_file(src), f"{layout.etc}/secrets/{src.name}"
                have = _read(secrets, src.name, where)
                if have is not None and have != data and not replace_secrets:
                    say(
                        f"kept {where} (differs from the bundle's; if the bundle was made again, the cloud now holds "
                        "the new key: run again with --replace-secrets)"
                    )
                    continue
                _write(secrets, src.name, data, uid, gid, 0o600, where)
        finally:
            os.close(secrets)
        if (bundle / "ca.pem").exists():
            _write(etc, "ca.pem", _bundle_file(bundle / "ca.pem"), uid, gid, 0o640, f"{layout.etc}/ca.pem")
        new = _bundle_file(bundle / "config.yaml")
        have = _read(etc, "config.yaml", f"{layout.etc}/config.yaml")
        broken = have is not None and _config_problem(have, f"{layout.etc}/config.yaml", layout)
        if have is not None and have != new and not broken:
            _write(etc, "config.yaml.bundle", new, uid, gid, 0o640, f"{layout.etc}/config.yaml.bundle")
            say(f"kept {layout.etc}/config.yaml (changed since); the bundle's is beside it as config.yaml.bundle")
        else:
            if broken and have is not None:
                _write(etc, "config.yaml.invalid", have, uid, gid, 0o640, f"{layout.etc}/config.yaml.invalid")
                say(f"replaced {layout.etc}/config.yaml, which does not load ({broken}); kept as config.yaml.invalid")
            _write(etc, "config.yaml", new, uid, gid, 0o640, f"{layout.etc}/config.yaml")
    finally:
        os.close(etc)
    layout.on_disk(layout.state).parent.mkdir(parents=True, exist_ok=True)
    os.close(_open_dir(layout.on_disk(layout.state), uid, gid, 0o750))


#: the agent's own code, what an A/B version holds: the gateway, the wire contract and what every part shares
#: (the version, logging, catalogs)
AGENT_PACKAGES = ("civicedge", "edge", "protocol")


def _copy_packages(src: Path, dest: Path) -> None:
    """The agent's own code (what an A/B version holds): :data:`AGENT_PACKAGES` from ``src``."""
    for pkg in AGENT_PACKAGES:
        shutil.copytree(src / pkg, dest / pkg, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))


def install_version(app: Path, src: Path, version: str) -> Path:
    """Copy this installation's agent packages (:data:`AGENT_PACKAGES`) as version ``version`` and point
    ``current`` at it (``edge install-version``: an install root of one's own, for development)."""
    from edge.updater import switch

    dest = app / "versions" / version
    _copy_packages(src, dest)
    switch(app, version)
    return dest


def install_app(layout: Layout, uid: int, gid: int, say: Say) -> None:
    """The first A/B version. It is built in a folder of root's beside the app folder (nothing the service could
    have prepared), handed to the service, then moved in and ``current`` pointed at it, all through the app
    folder's descriptor."""
    import tempfile

    from civicedge import __version__

    app_path = layout.on_disk(layout.app)
    app_path.parent.mkdir(parents=True, exist_ok=True)
    app = _open_dir(app_path, uid, gid, 0o755)
    try:
        try:
            current: str | None = os.readlink("current", dir_fd=app)
        except FileNotFoundError:
            current = None
        except OSError:
            raise InstallError(f"{layout.app}/current is not a link: remove it and run again") from None
        if current is not None:
            say(f"kept the installed version {current.rsplit('/', 1)[-1]} (updates replace it)")
            return
        versions = _open_dir(app_path / "versions", uid, gid, 0o755, parent=app)
        try:
            staging = Path(tempfile.mkdtemp(prefix=".civicedge-install.", dir=app_path.parent))
            try:
                built = staging / __version__
                _copy_packages(Path(__file__).resolve().parent.parent, built)
                for path in [built, *built.rglob("*")]:
                    os.chown(path, uid, gid, follow_symlinks=False)
                with contextlib.suppress(FileNotFoundError):  # a copy the service may have left there: aside
                    os.rename(__version__, f".{__version__}.old", src_dir_fd=versions, dst_dir_fd=versions)
                os.rename(built, __version__, dst_dir_fd=versions)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        finally:
            os.close(versions)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(".current.tmp", dir_fd=app)
        os.symlink(f"versions/{__version__}", ".current.tmp", dir_fd=app)
        os.rename(".current.tmp", "current", src_dir_fd=app, dst_dir_fd=app)
        os.chown("current", uid, gid, dir_fd=app, follow_symlinks=False)
        say(f"installed version {__version__} as the first A/B version")
    finally:
        os.close(app)


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
    conf = layout.on_disk(Path("/etc/systemd/system.conf.d/civicedge-watchdog.conf"))
    if hardware_watchdog:
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(SYSTEM_WATCHDOG.format(seconds=HARDWARE_WATCHDOG_S))
        say(f"hardware watchdog: systemd feeds it every {HARDWARE_WATCHDOG_S / 2:g} s (takes effect at the next boot)")
    elif conf.exists():
        conf.unlink()
        say("hardware watchdog: no longer fed by systemd (an earlier --hardware-watchdog undone; next boot)")


def check_config(layout: Layout) -> str:
    """The installed config, read as the agent will read it (paths under the prefix when staging)."""
    from edge.config import ConfigError, expand_tree, load_yaml, parse_config

    path = layout.on_disk(layout.etc) / "config.yaml"
    etc = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW)
    try:
        text = _read(etc, "config.yaml", str(layout.etc / "config.yaml")) or b""
    finally:
        os.close(etc)
    try:
        cfg = parse_config(expand_tree(load_yaml(text.decode())), str(layout.etc / "config.yaml"))
    except (ConfigError, yaml.YAMLError, UnicodeDecodeError) as exc:
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
    replace_secrets: bool = False,
    say: Say = print,
) -> str:
    """Run every step; returns the device id."""
    if os.geteuid() != 0:
        raise InstallError("run it as root: sudo /opt/civicedge/venv/bin/civicedge edge install --bundle …")
    if journal_max and not re.fullmatch(r"[1-9][0-9]*[KMG]", journal_max):
        raise InstallError(f"--journal-max {journal_max!r}: give a size with its unit, e.g. 64M or 1G")
    if layout.prefix != Path("/") and not layout.on_disk(Path("/etc/passwd")).is_file():
        raise InstallError(
            f"{layout.prefix} has no etc/passwd: --prefix must be the root of an installed system "
            "(a mounted image, a debootstrap root)"
        )
    _, device = read_bundle(bundle, layout)
    ids: dict[str, int] = {}

    def account() -> None:
        ids["uid"], ids["gid"] = ensure_account(layout, say)

    steps: list[tuple[str, Callable[[], object]]] = [
        (f"service user {layout.user} and groups {', '.join(layout.groups)}", account),
        (
            f"{layout.etc} and {layout.state}",
            lambda: install_files(bundle, layout, ids["uid"], ids["gid"], say, replace_secrets),
        ),
        (f"the first version under {layout.app}", lambda: install_app(layout, ids["uid"], ids["gid"], say)),
        ("the config, as the agent reads it", lambda: _note(check_config(layout), say)),
        (f"the systemd unit {SERVICE}", lambda: write_unit(layout, device, journal_max, hardware_watchdog, say)),
    ]
    if start_service and layout.prefix == Path("/"):
        steps.append((f"start {SERVICE}", lambda: start(say)))
    for i, (title, step) in enumerate(steps, 1):
        say(f"[{i}/{len(steps)}] {title}")
        step()
    if not (start_service and layout.prefix == Path("/")):
        say(f"not started: on the gateway, systemctl enable --now {SERVICE}")
    return device


def _note(text: str, say: Say) -> None:
    say(f"warning: {text}" if text else "config loads")
