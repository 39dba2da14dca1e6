"""``civicedge edge install`` into a staging root (real useradd/groupadd on the root's own /etc, real files,
real ownership), and the unit it writes checked by systemd itself (``systemd-analyze verify``)."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from civicedge import __version__
from edge.agent import storage_paths
from edge.appliance import GROUPS, InstallError, Layout, install, render_unit
from edge.config import parse_config
from simulators.fleet import agent_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="installs a system user and chowns files: needs root")
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


def _staging(root: Path) -> Path:
    """A fresh gateway root: only root, and the dialout and video groups Raspberry Pi OS has."""
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\ndialout:x:20:\nvideo:x:44:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\ndialout:*::\nvideo:*::\n")
    return root


def _bundle(tmp_path: Path) -> Path:
    """What tools/flash.py gateway-bundle writes (its own test makes a real one against the cloud)."""
    from protocol.signing import generate_key, private_key_pem

    b = tmp_path / "bundle"
    (b / "secrets").mkdir(parents=True)
    (b / "secrets" / "signing-key.pem").write_bytes(private_key_pem(generate_key()))
    (b / "secrets" / "mqtt-password").write_text("s3cret-s3cret-s3cret\n")
    doc = agent_config(Path("/var/lib/civicedge"), device="gate-07", host="mqtt.example.org", port=8883)
    doc["device"]["signing_key_file"] = "/etc/civicedge/secrets/signing-key.pem"
    doc["mqtt"] |= {"username": "gate-07", "password_file": "/etc/civicedge/secrets/mqtt-password"}
    doc["outbox"] = {"path": "/var/lib/civicedge/outbox.db"}
    doc["updates"] = {"root": "/opt/civicedge/app"}
    (b / "config.yaml").write_text(yaml.safe_dump(doc))
    return b


def _install(bundle: Path, prefix: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "civicedge_cli",
            "edge",
            "install",
            "--bundle",
            str(bundle),
            "--prefix",
            str(prefix),
            "--no-start",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _ids(prefix: Path, name: str, table: str = "passwd") -> list[str]:
    for line in (prefix / "etc" / table).read_text().splitlines():
        f = line.split(":")
        if f[0] == name:
            return f
    raise AssertionError(f"{name} not in {table}")


def _unit(text: str) -> configparser.RawConfigParser:
    cp = configparser.RawConfigParser(strict=False)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(text)
    return cp


def test_install_makes_a_gateway_of_a_blank_root(tmp_path: Path) -> None:
    prefix = _staging(tmp_path / "root")
    bundle = _bundle(tmp_path)
    r = _install(bundle, prefix, "--hardware-watchdog")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[1/5] service user civicedge" in r.stdout and "[5/5] the systemd unit" in r.stdout
    assert "created group gpio" in r.stdout and "created group dialout" not in r.stdout

    # a system user with no login, in every hardware group (the ones missing were made)
    user = _ids(prefix, "civicedge")
    uid, gid = int(user[2]), int(user[3])
    assert uid < 1000 and user[6] == "/usr/sbin/nologin" and user[5] == "/var/lib/civicedge"
    for g in GROUPS:
        assert "civicedge" in _ids(prefix, g, "group")[3].split(","), g

    # the bundle's files, owned by the service, secrets 0600 in a 0700 folder
    etc = prefix / "etc" / "civicedge"
    for path, mode in [
        (etc, 0o750),
        (etc / "secrets", 0o700),
        (etc / "secrets" / "signing-key.pem", 0o600),
        (etc / "secrets" / "mqtt-password", 0o600),
        (etc / "config.yaml", 0o640),
        (prefix / "var" / "lib" / "civicedge", 0o750),
    ]:
        st = path.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (uid, gid, mode), path

    # the first A/B version, the service's own (updates write there)
    app = prefix / "opt" / "civicedge" / "app"
    assert os.readlink(app / "current") == f"versions/{__version__}"
    assert (app / "current" / "edge" / "agent.py").exists() and (app / "current" / "protocol").is_dir()
    assert (app / "versions" / __version__ / "edge" / "launcher.py").stat().st_uid == uid

    # the unit: the launcher, notify with a watchdog, the groups, the journal cap, the hardware watchdog
    unit = _unit((prefix / "etc/systemd/system/civicedge-agent.service").read_text())
    svc = unit["Service"]
    assert svc["ExecStart"] == (
        f"{sys.prefix}/bin/civicedge edge launch --root /opt/civicedge/app --config /etc/civicedge/config.yaml"
    )
    assert (svc["Type"], svc["NotifyAccess"], svc["WatchdogSec"], svc["Restart"]) == ("notify", "all", "30", "always")
    assert svc["SupplementaryGroups"].split() == list(GROUPS) and svc["User"] == "civicedge"
    assert "SystemMaxUse=64M" in (prefix / "etc/systemd/journald.conf.d/civicedge.conf").read_text()
    assert "RuntimeWatchdogSec=15" in (prefix / "etc/systemd/system.conf.d/civicedge-watchdog.conf").read_text()


def test_hardening_leaves_every_path_the_agent_writes_writable(tmp_path: Path) -> None:
    """ProtectSystem=strict makes the whole tree read-only: each place the installed agent writes (its state,
    galleries, the A/B versions it updates, the config set-config rewrites, the password set-credentials
    rotates) must be under ReadWritePaths= or the StateDirectory=."""
    prefix = _staging(tmp_path / "root")
    assert _install(_bundle(tmp_path), prefix).returncode == 0
    svc = _unit((prefix / "etc/systemd/system/civicedge-agent.service").read_text())["Service"]
    assert svc["ProtectSystem"] == "strict"
    writable = [Path(p) for p in svc["ReadWritePaths"].split()] + [Path("/var/lib") / svc["StateDirectory"]]
    cfg = parse_config(yaml.safe_load((prefix / "etc/civicedge/config.yaml").read_text()))
    assert cfg.updates is not None and cfg.mqtt.password_file is not None
    written = [Path(p) for p in storage_paths(cfg).values()]
    written += [cfg.updates.root / "current", Path("/etc/civicedge/config.yaml"), cfg.mqtt.password_file]
    for path in written:
        assert any(path.is_relative_to(w) for w in writable), f"{path} is read-only under the unit's hardening"
    # … and the code the launcher runs from (the venv) is not writable by the service
    assert not any(Path(sys.prefix).is_relative_to(w) for w in writable)


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (apt-get install systemd)")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    unit = tmp_path / "civicedge-agent.service"
    unit.write_text(render_unit(Layout(), "gate-07"))
    r = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r.stdout + r.stderr
    # a typo'd key is what verify is there to catch: it would be reported, so the clean run above means something
    bad = tmp_path / "typo.service"
    bad.write_text(unit.read_text().replace("WatchdogSec=", "WatchDogSec="))
    r = subprocess.run([SYSTEMD_ANALYZE, "verify", "--man=no", str(bad)], capture_output=True, text=True, timeout=60)
    assert "Unknown key 'WatchDogSec'" in r.stderr
    # systemd's own exposure score for the hardening (0 best, 10 worst; a unit without any scores 9.6)
    r = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=yes", str(unit)], capture_output=True, text=True, timeout=60
    )
    score = float(r.stdout.rsplit("Overall exposure level for", 1)[1].split(":")[1].split()[0])
    assert score <= 3.0, r.stdout[-2000:]


def test_a_second_install_keeps_what_the_gateway_changed(tmp_path: Path) -> None:
    prefix = _staging(tmp_path / "root")
    bundle = _bundle(tmp_path)
    assert _install(bundle, prefix).returncode == 0
    etc = prefix / "etc" / "civicedge"
    changed = (etc / "config.yaml").read_text() + "log_level: info\n"  # as set-config would
    (etc / "config.yaml").write_text(changed)
    (bundle / "secrets" / "signing-key.pem").write_text("another key\n")  # a bundle made again by mistake
    again = _install(bundle, prefix)
    assert again.returncode == 0, again.stderr
    assert (etc / "config.yaml").read_text() == changed and (etc / "config.yaml.bundle").exists()
    assert (etc / "secrets" / "signing-key.pem").read_text() != "another key\n"
    assert "kept /etc/civicedge/secrets/signing-key.pem" in again.stdout
    assert f"kept the installed version {__version__}" in again.stdout
    assert sum(line.startswith("civicedge:") for line in (prefix / "etc/passwd").read_text().splitlines()) == 1


def test_install_errors_name_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    r = _install(tmp_path, _staging(tmp_path / "root"))  # a folder that is not a bundle
    assert r.returncode == 2 and "not a gateway bundle" in r.stderr and "gateway-bundle" in r.stderr
    assert "Traceback" not in r.stderr
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(InstallError, match="as root: sudo"):
        install(_bundle(tmp_path), Layout(prefix=tmp_path / "x"))


def test_a_compromised_service_cannot_steer_a_second_install(tmp_path: Path) -> None:
    """The service user owns /etc/civicedge and /opt/civicedge/app. Playing a compromised agent, plant links
    and a FIFO there; the next install (as root) refuses or goes around them and never writes, chowns or reads
    through them."""
    prefix = _staging(tmp_path / "root")
    bundle = _bundle(tmp_path)
    assert _install(bundle, prefix).returncode == 0
    etc = prefix / "etc" / "civicedge"
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    victim.chmod(0o600)
    (bundle / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")

    (etc / "ca.pem").symlink_to(victim)  # root would write the CA over it and hand it to the service
    r = _install(bundle, prefix)
    assert r.returncode == 2 and "ca.pem" in r.stderr and "link" in r.stderr, r.stderr
    assert (
        victim.read_text() == "root's file\n" and victim.stat().st_uid == 0 and victim.stat().st_mode & 0o777 == 0o600
    )
    (etc / "ca.pem").unlink()

    os.mkfifo(etc / "config.yaml.bundle")  # a FIFO: a reader or writer that never returns
    (etc / "config.yaml").write_text((etc / "config.yaml").read_text() + "log_level: info\n")
    r = _install(bundle, prefix)
    assert r.returncode == 2 and "config.yaml.bundle" in r.stderr
    (etc / "config.yaml.bundle").unlink()

    secrets = etc / "secrets"
    shutil.rmtree(secrets)
    victim_dir = tmp_path / "victim-dir"
    victim_dir.mkdir(mode=0o755)
    secrets.symlink_to(victim_dir)  # root would chown the folder it points at to the service
    r = _install(bundle, prefix)
    assert r.returncode == 2 and "not a plain folder" in r.stderr
    assert victim_dir.stat().st_uid == 0 and victim_dir.stat().st_mode & 0o777 == 0o755
    assert list(victim_dir.iterdir()) == []


def test_a_bundle_cannot_smuggle_unit_lines_or_host_files(tmp_path: Path) -> None:
    prefix = _staging(tmp_path / "root")
    bundle = _bundle(tmp_path)
    doc = yaml.safe_load((bundle / "config.yaml").read_text())
    doc["device"]["id"] = "gate-07\nExecStartPre=+/bin/sh -c 'id > /tmp/owned'"
    (bundle / "config.yaml").write_text(yaml.safe_dump(doc))
    r = _install(bundle, prefix)
    assert r.returncode == 2 and "device.id" in r.stderr
    assert not (prefix / "etc/systemd/system/civicedge-agent.service").exists()

    bundle = _bundle(tmp_path / "second")
    (bundle / "secrets" / "shadow").symlink_to("/etc/shadow")  # a link to a file of the gateway's
    r = _install(bundle, prefix)
    assert r.returncode == 2 and "not a plain file" in r.stderr
    assert not (prefix / "etc/civicedge/secrets/shadow").exists()


def test_a_bad_bundle_config_changes_nothing_and_a_fixed_one_installs(tmp_path: Path) -> None:
    prefix = _staging(tmp_path / "root")
    bundle = _bundle(tmp_path)
    good = (bundle / "config.yaml").read_text()
    (bundle / "config.yaml").write_text(good.replace("port:", "prot:", 1))
    r = _install(bundle, prefix)
    assert r.returncode == 2 and "prot" in r.stderr and "nothing was changed" in r.stderr, r.stderr
    assert not (prefix / "etc/civicedge").exists() and "civicedge" not in (prefix / "etc/passwd").read_text()
    (bundle / "config.yaml").write_text(good)
    assert _install(bundle, prefix).returncode == 0
    # an installed config that no longer loads (edited by hand) is replaced by the bundle's, and kept aside
    installed = prefix / "etc/civicedge/config.yaml"
    installed.write_text(good + "bogus_section: 1\n")
    again = _install(bundle, prefix)
    assert again.returncode == 0 and "does not load" in again.stdout, again.stdout + again.stderr
    assert installed.read_text() == good and "bogus_section" in (installed.parent / "config.yaml.invalid").read_text()


def test_a_bundle_made_again_replaces_the_key_when_asked(tmp_path: Path) -> None:
    from protocol.signing import generate_key, private_key_pem

    prefix = _staging(tmp_path / "root")
    bundle = _bundle(tmp_path)
    assert _install(bundle, prefix).returncode == 0
    new_key = private_key_pem(generate_key())
    (bundle / "secrets" / "signing-key.pem").write_bytes(new_key)
    kept = _install(bundle, prefix)
    assert "--replace-secrets" in kept.stdout
    installed = prefix / "etc/civicedge/secrets/signing-key.pem"
    assert installed.read_bytes() != new_key
    assert _install(bundle, prefix, "--replace-secrets").returncode == 0 and installed.read_bytes() == new_key
    assert installed.stat().st_mode & 0o777 == 0o600
