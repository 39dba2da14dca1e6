"""Camera sources: the registry the production code owns (v4l2, rtsp, picamera) with the simulators plugged in
through entry points; OpenCV sources hand out only the newest frame, reopen a stream that ends and say what is
wrong; no production module imports the simulators."""

from __future__ import annotations

import ast
import sys
import types
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from pydantic import BaseModel, ValidationError

from edge.drivers.camera import OpenCVSource, open_camera, redact, source_commands, with_credentials
from edge.drivers.config import CAMERA_PLUGINS, PiCameraConfig, RtspCameraConfig, V4L2CameraConfig, camera_kind
from edge.drivers.io import DriverError
from edge.units.gate_config import GateConfig

ROOT = Path(__file__).resolve().parents[2]


class _Cfg(BaseModel):
    camera: Any


def test_the_registry_has_the_real_cameras_and_the_simulators_plug_in() -> None:
    for name, settings in (("v4l2", V4L2CameraConfig), ("rtsp", RtspCameraConfig), ("picamera", PiCameraConfig)):
        assert camera_kind(name).settings is settings
        assert camera_kind(name).opener.startswith("edge.drivers.")
    plugged = {ep.name: ep.value for ep in entry_points(group=CAMERA_PLUGINS)}
    assert plugged["simulated"].startswith("simulators.") and plugged["facade_sim"].startswith("simulators.")
    assert camera_kind("simulated").thermal and not camera_kind("v4l2").thermal
    base = {"type": "gate", "io": {"type": "gpio"}, "secret": "s", "vision": {"thermal": None}}
    g = GateConfig.model_validate({**base, "camera": {"type": "rtsp", "url": "rtsp://cam.local/stream1"}})
    assert isinstance(g.camera, RtspCameraConfig) and g.model_dump()["camera"]["url"].endswith("stream1")
    assert GateConfig.model_validate(base).camera == V4L2CameraConfig(type="v4l2")  # the default: /dev/video0
    with pytest.raises(ValidationError, match=r"unknown camera type 'webcam'; known: .*v4l2"):
        GateConfig.model_validate({**base, "camera": {"type": "webcam"}})
    with pytest.raises(ValidationError, match="url"):
        GateConfig.model_validate({**base, "camera": {"type": "rtsp", "url": "ftp://x"}})
    with pytest.raises(ValidationError, match="extra"):
        GateConfig.model_validate({**base, "camera": {"type": "v4l2", "devise": 0}})


def test_no_production_module_imports_the_simulators() -> None:
    offenders = []
    for part in ("protocol", "edge", "cloud"):
        for path in (ROOT / part).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                offenders += [
                    f"{path.relative_to(ROOT)}: {n}"
                    for n in names
                    if n.split(".")[0] in ("simulators", "tests", "bench")
                ]
    assert offenders == []


async def test_a_source_hands_out_only_the_newest_frame_and_reopens_a_stream_that_ends(tmp_path: Path) -> None:
    clip = tmp_path / "clip.avi"
    out = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 25, (160, 120))
    for i in range(20):
        out.write(np.full((120, 160, 3), i * 10, np.uint8))
    out.release()
    opened = []

    def opener() -> Any:
        opened.append(1)
        return cv2.VideoCapture(str(clip))

    source = OpenCVSource("clip", opener, timeout_s=3.0, max_backoff_s=0.2)
    try:
        first = await source.read()
        assert first.rgb.shape == (120, 160, 3) and first.ts is not None
        import asyncio

        await asyncio.sleep(0.3)  # the reader ran on: the next read is the newest frame, not the next one queued
        second = await source.read()
        assert second.ts is not None and second.ts > first.ts
        assert source.frames - 1 > 1  # frames were dropped in between, not queued
        for _ in range(200):  # the 20-frame clip ends; the source reopens it and frames keep coming
            await source.read()
            if len(opened) >= 3:
                break
        assert len(opened) >= 3 and source.reconnects >= 2
    finally:
        await source.close()


async def test_errors_say_what_is_wrong_and_keep_secrets_out() -> None:
    cam = open_camera(V4L2CameraConfig(type="v4l2", device="/dev/video97"))
    assert isinstance(cam, OpenCVSource)
    cam.timeout_s = 1.5
    with pytest.raises(DriverError, match="/dev/video97 does not exist"):
        await cam.read()
    await cam.close()
    assert redact("rtsp://admin:hunter2@10.0.0.5:554/h264") == "rtsp://admin:***@10.0.0.5:554/h264"
    assert redact("rtsp://admin:p@ss/w0rd@cam:554/s") == "rtsp://admin:***@cam:554/s"  # @ and / in a password
    assert redact("http://cam/snap?user=a&pwd=x1&Token=y2") == "http://cam/snap?user=a&pwd=***&Token=***"
    assert (
        redact("rtsp://cam:554/user=admin&password=hunter2&channel=1")
        == "rtsp://cam:554/user=admin&password=***&channel=1"
    )
    assert redact("rtsp://admin:p?ss@cam/live") == "rtsp://admin:***@cam/live"
    assert "y9" not in redact("http://c/s?pw=x8&credential=y9")
    assert with_credentials("rtsp://cam:554/s", "gate", "p@ss:w/rd") == "rtsp://gate:p%40ss%3Aw%2Frd@cam:554/s"
    rtsp = open_camera(RtspCameraConfig(type="rtsp", url="rtsp://admin:hunter2@127.0.0.1:1/stream", timeout_s=1.0))
    with pytest.raises(DriverError) as err:
        await rtsp.read()
    assert "cannot be opened" in str(err.value) and "hunter2" not in str(err.value) and "***" in str(err.value)
    await rtsp.close()
    assert source_commands(rtsp) == {}  # real cameras add no commands


async def test_the_pi_camera_needs_picamera2_and_hands_out_rgb(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = PiCameraConfig(type="picamera", width=160, height=120)
    monkeypatch.setitem(sys.modules, "picamera2", None)  # this machine has no libcamera
    with pytest.raises(DriverError, match="python3-libcamera"):
        open_camera(cfg)

    class Picamera2:  # the API the source uses, as picamera2 documents it: RGB888 arrays are B, G, R in memory
        def __init__(self, num: int) -> None:
            self.started = False

        def create_video_configuration(self, **kw: Any) -> dict[str, Any]:
            return kw

        def configure(self, config: dict[str, Any]) -> None:
            assert config["main"] == {"size": (160, 120), "format": "RGB888"}

        def start(self) -> None:
            self.started = True

        def capture_array(self, stream: str) -> np.ndarray:
            bgr = np.zeros((120, 160, 3), np.uint8)
            bgr[..., 0] = 200  # blue
            return bgr

        def close(self) -> None:
            self.started = False

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=Picamera2))
    cam = open_camera(cfg)
    frame = await cam.read()
    assert frame.rgb[0, 0].tolist() == [0, 0, 200]  # blue stays blue in RGB order
    await cam.close()


async def test_an_ip_camera_over_rtsp_streams_reconnects_after_a_reboot_and_keeps_its_password() -> None:
    """A real RTSP session (RTP/JPEG interleaved on TCP, Basic authentication) from the simulated IP camera
    through OpenCV's FFmpeg: frames in the right colours, a camera reboot survived, a wrong password named."""
    from simulators.ipcamera import IPCamera

    img = np.zeros((480, 640, 3), np.uint8)
    img[:, :320] = (200, 30, 30)  # left red, right blue
    img[:, 320:] = (30, 30, 200)
    cam = await IPCamera(lambda: img, fps=10, user="gate", password="p@ss:w/rd").start()
    url = f"rtsp://127.0.0.1:{cam.port}/stream1"
    source = open_camera(RtspCameraConfig(type="rtsp", url=url, user="gate", password="p@ss:w/rd", timeout_s=5))
    try:
        frame = await source.read()
        assert frame.rgb.shape == (480, 640, 3)
        assert frame.rgb[240, 100, 0] > 150 and frame.rgb[240, 100, 2] < 80  # red stays red
        assert frame.rgb[240, 500, 2] > 150 and frame.rgb[240, 500, 0] < 80
        await cam.reboot(down_s=1.0)
        sessions = cam.sessions
        for _ in range(100):
            try:
                await source.read()
            except DriverError:
                continue  # while the camera is down the source says so
            if cam.sessions > sessions:
                break
        assert cam.sessions > sessions and source.reconnects >= 1  # a new RTSP session after the reboot
        await source.read()
    finally:
        await source.close()
    wrong = open_camera(RtspCameraConfig(type="rtsp", url=url, user="gate", password="guess", timeout_s=2))
    assert isinstance(wrong, OpenCVSource)
    try:
        with pytest.raises(DriverError) as err:
            await wrong.read()
        assert "cannot be opened" in str(err.value) and "guess" not in str(err.value)
        assert cam.refused >= 1
    finally:
        await wrong.close()
        await cam.stop()
