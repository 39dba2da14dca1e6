from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from protocol import BODY_BY_TYPE, encode
from protocol.examples import example

CLI = [sys.executable, "-m", "civicedge_cli"]


def test_schema_export(tmp_path: Path) -> None:
    out = subprocess.run([*CLI, "protocol", "schema", "--out", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    files = {p.name for p in tmp_path.iterdir()}
    assert files == {f"{t}.schema.json" for t in BODY_BY_TYPE} | {"index.json"}
    schema = json.loads((tmp_path / "manhole.alarm.schema.json").read_text())
    assert schema["properties"]["type"]["const"] == "manhole.alarm"
    assert schema["x-channels"] == ["alm"] and schema["x-lane"] == "alarm"


def test_validate_ok_and_rejections(tmp_path: Path) -> None:
    top, env = example("manhole.alarm")
    good = tmp_path / "good.json"
    good.write_bytes(encode(env))
    ok = subprocess.run([*CLI, "protocol", "validate", str(good), "--topic", top], capture_output=True, text=True)
    assert ok.returncode == 0 and "manhole.alarm" in ok.stdout
    bad = subprocess.run(
        [*CLI, "protocol", "validate", str(good), "--topic", top.replace("alm", "tele")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "wrong_channel" in bad.stderr and "Traceback" not in bad.stderr
    trunc = tmp_path / "trunc.json"
    trunc.write_bytes(encode(env)[:20])
    bad = subprocess.run([*CLI, "protocol", "validate", str(trunc)], capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr.startswith("invalid: malformed_json")
    missing = subprocess.run(
        [*CLI, "protocol", "validate", str(tmp_path / "nope.json")], capture_output=True, text=True
    )
    assert missing.returncode == 2 and "cannot read" in missing.stderr
