"""``pytest hw-tests --rig RIG.yaml``: a rig names real hardware; tests needing a piece the rig lacks are listed
as not run with the reason; a broken rig file is a usage error that says what is wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from simulators.mpboard import MPBoard
from tests.conftest import ROOT


def _pytest(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "hw-tests", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        check=False,
    )


def test_a_rig_with_only_a_micropython_board(tmp_path: Path) -> None:
    board = MPBoard()  # stands in for the real board the rig file names
    try:
        rig = tmp_path / "rig.yaml"
        rig.write_text(f"name: bench-7\nmicropython_board:\n  port: {board.port}\n")
        r = _pytest("--rig", str(rig))
    finally:
        board.close()
    assert r.returncode == 0, r.stdout[-3000:]
    assert "hardware-in-the-loop: bench-7" in r.stdout
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines() if ln.startswith("test_")}
    assert "real" in lines["test_micropython_board_answers_on_its_raw_repl"]
    assert "passed" in lines["test_micropython_board_answers_on_its_raw_repl"]
    assert "not run: rig 'bench-7' has no ioboard" in lines["test_ioboard_answers_switches_and_falls_safe"]
    assert "has no plc" in lines["test_plc_runs_and_reports_its_state"]


def test_a_broken_rig_file_says_what_is_wrong(tmp_path: Path) -> None:
    rig = tmp_path / "rig.yaml"
    rig.write_text("ioboard:\n  baud: 9600\n")  # no port
    r = _pytest("--rig", str(rig))
    assert r.returncode == 4  # a usage error
    assert "is not valid" in r.stderr and "port" in r.stderr
    missing = _pytest("--rig", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 4 and "cannot read the rig file" in missing.stderr


def test_the_example_rig_files_are_valid() -> None:
    import importlib.util

    import yaml

    spec = importlib.util.spec_from_file_location("hil_conftest", ROOT / "hw-tests" / "conftest.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["hil_conftest"] = mod  # its dataclasses look themselves up there
    try:
        spec.loader.exec_module(mod)
    finally:
        del sys.modules["hil_conftest"]
    rigs = sorted((ROOT / "hw-tests" / "rigs").glob("*.yaml"))
    assert len(rigs) >= 2
    for path in rigs:
        rig = mod.Rig.model_validate(yaml.safe_load(path.read_text()))
        assert rig.name != "simulated", path
