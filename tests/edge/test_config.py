"""A bad config is refused at start with the field path and the reason; secrets come from the environment."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.config import ConfigError, load_config

GOOD = """
device: {site: riverside, id: gate-01, kind: gate}
mqtt: {host: 127.0.0.1, port: 1883, username: gate-01, password: "${CE_MQTT_PASSWORD}"}
outbox: {path: var/gate.db, budget_bytes: 1000000}
units:
  - {type: ticker, rate_per_s: 2}
"""


def test_env_secret_expanded(tmp_path: Path) -> None:
    p = tmp_path / "site.yaml"
    p.write_text(GOOD)
    cfg = load_config(p, env={"CE_MQTT_PASSWORD": "s3cret"})
    assert cfg.mqtt.password == "s3cret" and cfg.client_id == "riverside.gate-01"
    with pytest.raises(ConfigError, match="CE_MQTT_PASSWORD"):
        load_config(p, env={})
    # a secret is a value, never YAML: any character survives, and none shows up in an error
    for secret in ("abc #1", "x: y", "@dmin1", "{[p]}", "a\nb"):
        assert load_config(p, env={"CE_MQTT_PASSWORD": secret}).mqtt.password == secret
    p.write_text(GOOD.replace('password: "${CE_MQTT_PASSWORD}"', "password: ${CE_MQTT_PASSWORD}"))  # unquoted
    assert load_config(p, env={"CE_MQTT_PASSWORD": "p@ss: #1"}).mqtt.password == "p@ss: #1"
    # text in the file can never pose as a held reference (and so never turns into a secret)
    p.write_text(GOOD.replace("host: 127.0.0.1", "host: CEENVREF0X.example"))
    cfg = load_config(p, env={"CE_MQTT_PASSWORD": "s3cret"})
    assert cfg.mqtt.host == "CEENVREF0X.example" and cfg.mqtt.password == "s3cret"


@pytest.mark.parametrize(
    ("patch", "expect"),
    [
        (("port: 1883", "port: 99999"), "mqtt.port: Input should be less than or equal to 65535"),
        (("id: gate-01", "id: Gate 01"), "device.id:"),
        (("kind: gate}", "kind: gate, colour: red}"), "device.colour: Extra inputs are not permitted"),
        (("type: ticker", "type: teleporter"), "units.0:"),
        (("budget_bytes: 1000000", "budget_bytes: 10"), "outbox.budget_bytes"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, patch: tuple[str, str], expect: str) -> None:
    p = tmp_path / "site.yaml"
    p.write_text(GOOD.replace(*patch))
    with pytest.raises(ConfigError) as exc:
        load_config(p, env={"CE_MQTT_PASSWORD": "x"})
    assert expect in str(exc.value)


def test_cli_refuses_bad_config_readably(tmp_path: Path) -> None:
    p = tmp_path / "site.yaml"
    p.write_text(GOOD.replace("port: 1883", "port: nope"))
    for args in (["edge", "run", "--config", str(p)], ["edge", "check-config", str(p)]):
        out = subprocess.run(
            [sys.executable, "-m", "civicedge_cli", *args],
            capture_output=True,
            text=True,
            env={"CE_MQTT_PASSWORD": "x", "PATH": "/usr/bin:/bin"},
            timeout=60,
        )
        assert out.returncode == 2
        assert "mqtt.port" in out.stderr and "Traceback" not in out.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "civicedge_cli", "edge", "check-config", str(tmp_path / "x.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "cannot read config" in missing.stderr


def test_yaml_syntax_error(tmp_path: Path) -> None:
    p = tmp_path / "site.yaml"
    p.write_text("device: {site: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(p, env={})
