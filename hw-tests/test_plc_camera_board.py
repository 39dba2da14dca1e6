"""The parking tower's PLC (register map in protocol/parking.py), a camera, and a MicroPython board's REPL."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from edge.drivers.config import ModbusRtu, ModbusTcp
from edge.drivers.modbus import modbus_client
from protocol import parking as p


@pytest.mark.hardware("plc")
async def test_plc_runs_and_reports_its_state(bench) -> None:  # type: ignore[no-untyped-def]
    r = bench.rig.plc
    transport = ModbusRtu(**r.transport) if r.transport.get("type") == "rtu" else ModbusTcp(**r.transport)
    client = modbus_client(transport, timeout_s=1.0, retries=1)
    await client.connect()
    try:
        beats = []
        for _ in range(2):
            rr = await client.read_input_registers(p.base(0), count=p.SIZE, device_id=r.unit_id)
            assert not rr.isError(), rr
            regs = rr.registers
            assert 0 <= regs[p.IR_STATE] < len(p.STATES)
            beats.append(regs[p.IR_HEARTBEAT])
            time.sleep(0.3)
        assert beats[1] != beats[0], "the PLC's heartbeat register does not move: is its program running?"
    finally:
        client.close()


@pytest.mark.hardware("camera")
async def test_camera_delivers_frames(bench) -> None:  # type: ignore[no-untyped-def]
    r = bench.rig.camera
    if r.index < 0:
        from simulators.gate_scene import SimulatedGateScene

        cam = SimulatedGateScene(fps=15)
    else:
        from edge.drivers.camera import open_camera
        from edge.drivers.config import V4L2CameraConfig

        cam = open_camera(V4L2CameraConfig(type="v4l2", device=r.index))
    frames, t0 = [], time.monotonic()
    try:
        while time.monotonic() - t0 < 2.0:
            frames.append(await cam.read())
    finally:
        await cam.close()
    h, w = frames[0].rgb.shape[:2]
    assert w >= 320 and h >= 240, (w, h)
    assert len(frames) / 2.0 >= r.min_fps, f"{len(frames) / 2.0:.1f} fps"


@pytest.mark.hardware("micropython_board")
def test_micropython_board_answers_on_its_raw_repl(bench) -> None:  # type: ignore[no-untyped-def]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mpremote",
            "connect",
            bench.rig.micropython_board.port,
            "exec",
            "import sys; print(sys.implementation.name)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "micropython"
