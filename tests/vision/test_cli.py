"""``civicedge vision enroll/identify`` on real photos, with clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import matplotlib.cbook as cbook
from PIL import Image
from skimage import data


def cli(*args: str, secret: str | None = "s3cret", cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CE_DEVICE_SECRET"}
    if secret:
        env["CE_DEVICE_SECRET"] = secret
    return subprocess.run(
        [sys.executable, "-m", "civicedge_cli", "vision", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
    )


def test_enroll_then_identify(tmp_path: Path) -> None:
    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    Image.fromarray(data.coffee()).save(tmp_path / "coffee.png")
    grace = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    out = cli("enroll", "res-1042", "astronaut.png", "coffee.png", "--unit", "12-0304", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "enrolled res-1042 with 1 embedding(s)" in out.stdout and "no face in coffee.png" in out.stderr
    hit = cli("identify", "astronaut.png", cwd=tmp_path)
    assert hit.returncode == 0 and hit.stdout.startswith("res-1042") and "(match)" in hit.stdout
    miss = cli("identify", str(grace), cwd=tmp_path)
    assert miss.returncode == 1 and miss.stdout.startswith("nobody")
    locked = cli("identify", "astronaut.png", secret="wrong", cwd=tmp_path)
    assert locked.returncode == 2 and "another device secret" in locked.stderr
    nosecret = cli("identify", "astronaut.png", secret=None, cwd=tmp_path)
    assert nosecret.returncode == 2 and "CE_DEVICE_SECRET" in nosecret.stderr and "Traceback" not in nosecret.stderr
