"""A door without a thermal camera: the motion cue lets a resident in and keeps a print of the same resident
out; turning liveness off is possible only explicitly, and the gate then says so with a standing alarm."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from edge.outbox import Outbox
from edge.tasks import cancel_and_wait
from edge.trust import Trust
from edge.units.base import UnitContext
from edge.units.gate import GateUnit
from edge.units.gate_config import GateConfig
from simulators.camera import enrol_photo
from simulators.ioboard import IOBoardSim
from simulators.thermal import Scene
from tests.sent import Sent
from tests.waits import until


@asynccontextmanager
async def gate(
    tmp_path: Path, camera: dict[str, Any] | None = None, ready: bool = True, **vision: Any
) -> AsyncIterator[tuple[GateUnit, Sent]]:
    board = IOBoardSim()
    enrol_photo(tmp_path / "gallery.db", b"device-secret", "res-astronaut", "astronaut")
    cfg = GateConfig.model_validate(
        {
            "type": "gate",
            "io": {"type": "ioboard", "port": board.port, "outputs": {"lock": 0}, "inputs": {}, "watchdog_s": None},
            "door_contact": None,
            "fire": None,
            "secret": "device-secret",
            "gallery": str(tmp_path / "gallery.db"),
            "camera": camera or {"type": "simulated", "fps": 10},
            "vision": {"thermal": None, **vision},
            "open_s": 0.5,
            "cooldown_s": 30.0,
        }
    )
    outbox = await Outbox(tmp_path / "outbox.db", "gate-01").open()
    unit = GateUnit(cfg)
    ctx = UnitContext(
        "gate-01", outbox, lambda *_: None, online=lambda: True, subscribe=lambda *_: None, trust=Trust("gate-01", {})
    )
    task = asyncio.create_task(unit.run(ctx))
    try:
        if ready:
            await until(lambda: unit.vision is not None and unit.camera is not None, 30, "the gate to load its models")
        yield unit, Sent(outbox)
        assert not task.done(), "the gate unit stopped"
    finally:
        await cancel_and_wait(task)
        await outbox.close()
        board.close()


async def test_a_resident_gets_in_and_a_print_of_the_resident_does_not(tmp_path: Path) -> None:
    async with gate(tmp_path) as (unit, _sent):
        assert unit.vision is not None and unit.vision.motion is not None  # no thermal: the motion cue is on
        # held up long enough for a loaded machine (the prompt comes 1.5 s of frames after the print settles)
        unit.camera.arrive("astronaut", Scene(distance_m=0.6, kind="paper"), dwell_s=30.0)
        start = unit.camera.frames
        await until(lambda: "please turn your head a little" in unit.prompts, 30, "the gate to ask for a head turn")
        await until(lambda: unit.camera.frames - start > 35, 30, "four seconds of the print held up")
        assert not any(d.decision == "open" for d in unit.decisions), "a print opened the door"
        unit.camera.arrive("astronaut", Scene(distance_m=0.6), dwell_s=5.0)

        def opened() -> bool:
            return any(d.reason == "resident_match" for d in unit.decisions)

        await until(opened, 20, "the resident's door to open")
        match = next(d for d in unit.decisions if d.reason == "resident_match")
        assert match.subject_id == "res-astronaut" and match.liveness is not None and match.liveness >= 0.5


async def test_liveness_off_is_explicit_and_raises_a_standing_warning(tmp_path: Path) -> None:
    async with gate(tmp_path, liveness=False) as (unit, sent):
        assert unit.vision is not None and unit.vision.motion is None

        async def warned() -> bool:
            return any(m["body"]["code"] == "gate.liveness_off" for m in await sent("alarm.raise"))

        await until(warned, 10, "the liveness-off warning")
        raised = [m["body"] for m in await sent("alarm.raise") if m["body"]["code"] == "gate.liveness_off"]
        assert raised[0]["severity"] == "warning" and "photo" in raised[0]["message"]


def test_face_unlock_without_thermal_refuses_to_start_with_only_the_colour_cue() -> None:
    base = {"type": "gate", "io": {"type": "gpio"}, "secret": "s", "camera": {"type": "v4l2"}}
    with pytest.raises(ValueError, match="liveness: off to accept that a photo"):
        GateConfig.model_validate({**base, "vision": {"thermal": None, "liveness": {"motion": False}}})
    off = GateConfig.model_validate({**base, "vision": {"thermal": None, "liveness": "off"}})
    assert not off.vision.liveness.enabled
    assert GateConfig.model_validate({**base, "vision": {"thermal": None}}).vision.motion_liveness
    with pytest.raises(ValueError, match="no thermal camera"):  # screening configured, nothing to screen with
        GateConfig.model_validate(base)
    with pytest.raises(ValueError, match="32×24"):
        GateConfig.model_validate({**base, "thermal_camera": {"type": "mlx90640"}})
    mlx_thermal = {"registration": {"thermal_width": 32, "thermal_height": 24}}
    with pytest.raises(ValueError, match="blackbody_c: null when none is"):  # the default 38.0 would read background
        GateConfig.model_validate({**base, "thermal_camera": {"type": "mlx90640"}, "vision": {"thermal": mlx_thermal}})
    mlx = GateConfig.model_validate(
        {
            **base,
            "thermal_camera": {"type": "mlx90640", "refresh_hz": 16},
            "vision": {"thermal": {**mlx_thermal, "blackbody_c": None}},
        }
    )
    assert mlx.thermal_camera is not None and mlx.thermal_camera.refresh_hz == 16
    with pytest.raises(ValueError, match="on, off, or a mapping"):
        GateConfig.model_validate({**base, "vision": {"thermal": None, "liveness": "disabled"}})
    with pytest.raises(ValueError, match="Extra inputs"):  # a typo in the screening settings is not ignored
        GateConfig.model_validate({**base, "vision": {"thermal": {"fever": 38.0}}})
    with pytest.raises(ValueError, match="now v4l2"):
        GateConfig.model_validate({**base, "camera": {"type": "opencv"}})


async def test_hardware_faults_raise_alarms_and_the_gate_keeps_running(tmp_path: Path) -> None:
    async def alarm(sent: Sent, code: str) -> dict[str, Any] | None:
        return next((m["body"] for m in await sent("alarm.raise") if m["body"]["code"] == code), None)

    (tmp_path / "a").mkdir()
    async with gate(tmp_path / "a", camera={"type": "v4l2", "device": "/dev/video97"}, ready=False) as (unit, sent):
        fault = await until(lambda: alarm(sent, "gate.camera_fault"), 20, "the camera fault alarm")
        assert "/dev/video97 does not exist" in fault["message"]
        assert unit.decisions == deque() or not any(d.decision == "open" for d in unit.decisions)
    (tmp_path / "b").mkdir()
    async with gate(tmp_path / "b", ready=False, delegate="edgetpu") as (unit, sent):
        fault = await until(lambda: alarm(sent, "gate.vision_fault"), 30, "the vision fault alarm")
        assert "libedgetpu.so.1" in fault["message"] and fault["severity"] == "critical"
        assert unit.vision is None
