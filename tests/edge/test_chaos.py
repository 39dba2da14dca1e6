"""The chaos scenarios at a small size: real broker restarts, kill -9, a network cut, a full disk budget."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from simulators.chaos import budget_scenario


def test_chaos_edge_loses_nothing(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "civicedge_cli", "chaos", "edge", "--duration", "8", "--rate", "150", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert out.returncode == 0, out.stderr[-2000:]
    assert report["lost"] == 0
    assert report["sent"] >= 300 and report["received_unique"] == report["sent"]
    kinds = [f["fault"] for f in report["faults"]]
    assert sum("broker restarted" in k for k in kinds) == 2
    assert any("killed -9" in k for k in kinds) and any("network cut" in k for k in kinds)


async def test_budget_alarms_survive_telemetry_shed_and_counted(tmp_path: Path) -> None:
    report = await budget_scenario(alarms=50, readings=5000, budget_bytes=96 * 1024, workdir=tmp_path)
    assert report["alarms_lost"] == 0 and report["alarms_received"] == 50
    assert report["readings_shed"] > 0
    assert report["health_reported_shed"] == report["readings_shed"]
    assert report["accounted"], report
