"""tools/flash.py end to end without hardware: a simulated MicroPython board on a pty (mpremote talks to it as
to a real one), the cloud over HTTP, a locked-down Mosquitto. provision → deploy → the board boots its new
firmware and reports with its own credentials → verify sees it; reruns skip finished steps; mistakes are
explained, not raised."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.mpboard import MPBoard
from tests.cloud.conftest import SITE, TOKEN, Locked
from tests.conftest import ROOT

FLASH = ROOT / "tools" / "flash.py"


def flash(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(FLASH), *args], capture_output=True, text=True, cwd=cwd, timeout=180, check=False
    )


@pytest.fixture
def board() -> Iterator[MPBoard]:
    b = MPBoard()
    try:
        yield b
    finally:
        b.close()


def _claim(locked: Locked) -> str:
    r = locked.api.post(f"/api/sites/{SITE}/claims", json={"kind": "manhole", "ttl_s": 600})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_provision_deploy_verify_a_simulated_board(locked: Locked, board: MPBoard, tmp_path: Path) -> None:
    token = _claim(locked)
    common = ["--cloud", locked.url, "--state", str(tmp_path / "state")]
    dry = flash("provision", "--port", board.port, "--site", SITE, "--claim", token, "--dry-run", *common, cwd=tmp_path)
    assert dry.returncode == 0 and "would POST" in dry.stdout, dry.stderr
    assert not (board.flash / "config.json").exists()
    # boards speak TLS to the broker's TLS listener, the project CA pinned (the plain one is for the cloud only)
    settings = ["--set", "sample_s=0.5", "--set", "heartbeat_s=1"]
    p = flash("provision", "--port", board.port, "--site", SITE, "--claim", token, *settings, *common, cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "[1/2]" in p.stdout and "[2/2]" in p.stdout
    cfg = json.loads((board.flash / "config.json").read_text())
    device = cfg["device"]
    assert cfg["site"] == SITE and cfg["mqtt_user"] == device and len(cfg["mqtt_password"]) >= 24
    assert cfg["broker_port"] == locked.tls_port and cfg["mqtt_ca"] == locked.ca.read_text()
    state_file = next((tmp_path / "state").glob("board-*.json"))
    assert state_file.stat().st_mode & 0o777 == 0o600  # it holds the board's password
    again = flash("provision", "--port", board.port, "--site", SITE, "--claim", token, *settings, *common, cwd=tmp_path)
    assert again.returncode == 0 and "already done" in again.stdout  # resumable: the claim is not spent twice

    state = ["--state", str(tmp_path / "state")]
    d = flash("deploy", "--port", board.port, "--app", "manhole_node", *state, cwd=tmp_path)
    assert d.returncode == 0, d.stdout + d.stderr
    assert (board.flash / "main.py").read_bytes() == (ROOT / "firmware" / "manhole" / "main.py").read_bytes()
    assert sorted(p.name for p in (board.flash / "lib").iterdir()) == sorted(
        p.name for p in (ROOT / "firmware" / "lib").glob("*.py")
    )
    d2 = flash("deploy", "--port", board.port, "--app", "manhole_node", *state, cwd=tmp_path)
    assert (
        d2.returncode == 0
        and d2.stdout.count("already done (unchanged)") == len(list((board.flash / "lib").iterdir())) + 1
    )

    # the board resets into its firmware: sensors level, it reports with its own broker identity
    (board.flash / "inputs.json").write_text(
        json.dumps(
            {
                "inputs": [0] * 8,
                "sensors": {
                    "ax_mg": 0,
                    "ay_mg": 0,
                    "az_mg": round(1000 * math.cos(0)),
                    "water_mv": 100,
                    "gas_mv": 50,
                    "battery_mv": 1900,
                },
            }
        )
    )
    board.boot("board", ".")
    v = subprocess.run(
        [sys.executable, str(FLASH), "verify", "--device", device, "--cloud", locked.url, "--timeout", "60"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
        env={**os.environ, "CE_API_TOKEN": TOKEN},
    )
    assert v.returncode == 0, v.stdout + v.stderr + board.console()
    assert "reporting" in v.stdout or "online" in v.stdout
    assert "manhole.reading" in v.stdout


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_mistakes_are_explained(locked: Locked, board: MPBoard, tmp_path: Path) -> None:
    token = _claim(locked)
    common = ["--cloud", locked.url, "--state", str(tmp_path / "one")]
    assert (
        flash("provision", "--port", board.port, "--site", SITE, "--claim", token, *common, cwd=tmp_path).returncode
        == 0
    )
    reused = flash(
        "provision",
        "--port",
        board.port,
        "--site",
        SITE,
        "--claim",
        token,
        "--cloud",
        locked.url,
        "--state",
        str(tmp_path / "two"),
        cwd=tmp_path,
    )
    assert reused.returncode == 2 and "already used" in reused.stderr and "Traceback" not in reused.stderr
    wrong_app = flash("deploy", "--port", board.port, "--app", "toaster", cwd=tmp_path)
    assert wrong_app.returncode == 2 and "unknown app toaster" in wrong_app.stderr
    no_cloud = flash("verify", "--device", "x", "--cloud", "http://127.0.0.1:9", "--timeout", "1", cwd=tmp_path)
    assert no_cloud.returncode == 2 and "cannot reach the cloud" in no_cloud.stderr
    no_board = flash("deploy", "--port", "/dev/does-not-exist", "--app", "manhole_node", cwd=tmp_path)
    assert no_board.returncode == 2 and "failed" in no_board.stderr and "Traceback" not in no_board.stderr
    assert flash("--help", cwd=tmp_path).returncode == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_gateway_bundle(locked: Locked, tmp_path: Path) -> None:
    r = locked.api.post(f"/api/sites/{SITE}/claims", json={"kind": "gateway"})
    out = tmp_path / "bundle"
    b = flash(
        "gateway-bundle",
        "--site",
        SITE,
        "--claim",
        r.json()["token"],
        "--out",
        str(out),
        "--cloud",
        locked.url,
        "--state",
        str(tmp_path / "state"),
        cwd=tmp_path,
    )
    assert b.returncode == 0, b.stdout + b.stderr
    import yaml

    from edge.config import parse_config

    doc = yaml.safe_load((out / "config.yaml").read_text())
    cfg = parse_config(doc)  # the agent accepts it as it is
    assert cfg.mqtt.username == cfg.device.id and cfg.mqtt.tls is not None
    assert (out / "secrets" / "mqtt-password").stat().st_mode & 0o777 == 0o600
    # the gateway's own key: made in the bundle (0600), named by its config, its public half held by the cloud
    own = out / "secrets" / "signing-key.pem"
    assert own.stat().st_mode & 0o777 == 0o600 and cfg.device.signing_key_file == Path(
        "/etc/civicedge/secrets/signing-key.pem"
    )
    from protocol.signing import load_private_key, public_key_b64

    registered = locked.api.get(f"/api/devices/{cfg.device.id}").json()["signing_key"]
    assert registered == public_key_b64(load_private_key(own.read_bytes()))
    assert (out / "ca.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    # what the gateway installs from: install.sh, the civicedge wheel; then the real bundle installs
    assert (out / "install.sh").stat().st_mode & 0o111 and 'civicedge" edge install' in (out / "install.sh").read_text()
    assert len(list((out / "wheels").glob("civicedge-*.whl"))) == 1
    assert cfg.updates is not None and cfg.updates.root == Path("/opt/civicedge/app")
    if os.geteuid() == 0:  # (useradd into a staging root)
        from tests.edge.test_appliance import _install, _staging

        staged = _install(out, _staging(tmp_path / "gateway"))
        assert staged.returncode == 0, staged.stdout + staged.stderr
        assert "warning" not in staged.stdout, staged.stdout  # updates.root and the outbox where the unit allows


def test_a_signed_firmware_bundle_is_checked_switched_and_rolled_back(board: MPBoard, tmp_path: Path) -> None:
    from protocol.signing import generate_key, public_key_b64
    from protocol.updates import build_bundle

    key = generate_key()
    (board.flash / "main.py").write_text("print('v1')\n")  # what the board runs now
    src = tmp_path / "fw"
    (src / "lib").mkdir(parents=True)
    (src / "main.py").write_text("print('v2')\n")
    (src / "lib" / "helper.py").write_text("X = 2\n")
    good = tmp_path / "good.tar.gz"
    good.write_bytes(build_bundle(src, kind="manhole_node", version="1.2.0", key=key))
    forged = tmp_path / "forged.tar.gz"
    forged.write_bytes(build_bundle(src, kind="manhole_node", version="1.2.0", key=generate_key()))
    common = ["--port", board.port, "--update-key", public_key_b64(key), "--state", str(tmp_path / "s")]

    refused = flash("deploy-bundle", "--bundle", str(forged), *common, cwd=tmp_path)
    assert refused.returncode == 2 and "bad_signature" in refused.stderr
    assert (board.flash / "main.py").read_text() == "print('v1')\n"
    wrong_app = flash("deploy-bundle", "--bundle", str(good), "--app", "io_board", *common, cwd=tmp_path)
    assert wrong_app.returncode == 2 and "wrong_kind" in wrong_app.stderr

    ok = flash("deploy-bundle", "--bundle", str(good), *common, cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "all match" in ok.stdout and "[4/4]" in ok.stdout
    assert (board.flash / "main.py").read_text() == "print('v2')\n"
    assert (board.flash / "lib" / "helper.py").read_text() == "X = 2\n"
    assert (board.flash / "prev" / "main.py").read_text() == "print('v1')\n"  # the previous set is kept
    assert json.loads((board.flash / "version.json").read_text())["version"] == "1.2.0"
    back = flash("rollback", "--port", board.port, cwd=tmp_path)
    assert back.returncode == 0 and (board.flash / "main.py").read_text() == "print('v1')\n"


def test_a_board_refuses_a_broker_its_ca_did_not_sign(locked: Locked, micropython: Path, tmp_path: Path) -> None:
    """The board's TLS checks the broker against the pinned project CA: a broker impostor (here, the real broker
    checked against another CA) is refused before the board sends its name and password."""
    from cloud.provisioning.broker import write_broker_files

    other = write_broker_files(tmp_path / "other", host="127.0.0.1", tls_port=1)["ca"]
    script = tmp_path / "connect.py"
    script.write_text(
        "import sys\nfrom mqtt import MQTTClient\n"
        "ca = open(sys.argv[3]).read()\n"
        "for name, pem in (('pinned', open(sys.argv[4]).read()), ('impostor', ca)):\n"
        "    port, pw = int(sys.argv[1]), sys.argv[2]\n"
        "    c = MQTTClient('probe-' + name, '127.0.0.1', port, user='nobody', password=pw, ca=pem)\n"
        "    try:\n"
        "        c.connect()\n"
        "        print(name, 'connected')\n"
        "    except Exception as e:\n"
        "        print(name, 'refused:', type(e).__name__, e)\n"
    )
    out = subprocess.run(
        [str(micropython), str(script), str(locked.tls_port), "wrong-password", str(other), str(locked.ca)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MICROPYPATH": str(ROOT / "firmware" / "lib")},
        check=False,
    )
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if line.startswith(("pinned ", "impostor ")))
    # with the pinned CA the TLS handshake succeeds and the broker itself refuses the unknown user (code 5)
    assert lines["pinned"].startswith("refused: MQTTError connection refused, code 5"), out.stdout + out.stderr
    # against another CA the handshake fails: nothing was sent
    assert lines["impostor"].startswith("refused:") and "code" not in lines["impostor"], out.stdout + out.stderr
