"""The Raspberry Pi camera module (CSI) through picamera2 and libcamera.

picamera2 comes with the ``pi`` extra and needs libcamera's Python bindings, which Raspberry Pi OS ships
(``apt install python3-libcamera``; a venv made with ``--system-site-packages`` sees them). Elsewhere opening
the source says so. Frames are asked for as libcamera's ``RGB888``, whose bytes are in B, G, R order.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np

from edge.drivers.camera import Frame
from edge.drivers.config import PiCameraConfig
from edge.drivers.io import DriverError

MISSING = (
    "the Pi camera needs picamera2 and libcamera: on Raspberry Pi OS run `sudo apt install python3-libcamera` "
    "and install civicedge with the 'pi' extra in a venv made with --system-site-packages "
    "(on other hardware use camera type v4l2 or rtsp)"
)


class PiCamera:
    def __init__(self, cfg: PiCameraConfig) -> None:
        try:
            from picamera2 import Picamera2
        except Exception as exc:  # missing, or built against another numpy (simplejpeg): either way, say how
            raise DriverError(f"{MISSING} ({type(exc).__name__}: {exc})") from None
        try:
            self.cam: Any = Picamera2(cfg.camera)
            config = self.cam.create_video_configuration(
                main={"size": (cfg.width, cfg.height), "format": "RGB888"},
                controls={"FrameRate": float(cfg.fps)},
                buffer_count=2,  # the newest frame, not a queue of old ones
            )
            self.cam.configure(config)
            self.cam.start()
        except (IndexError, RuntimeError, OSError) as exc:
            raise DriverError(
                f"Pi camera {cfg.camera} cannot be started (is the ribbon cable seated?): {exc}"
            ) from None

    def _capture(self) -> Frame:
        bgr = self.cam.capture_array("main")
        return Frame(np.ascontiguousarray(bgr[:, :, 2::-1]), ts=time.monotonic())

    async def read(self) -> Frame:
        try:
            return await asyncio.to_thread(self._capture)
        except (RuntimeError, OSError) as exc:
            raise DriverError(f"Pi camera: {exc}") from None

    async def close(self) -> None:
        await asyncio.to_thread(self.cam.close)


def open_picamera(cfg: PiCameraConfig) -> PiCamera:
    return PiCamera(cfg)
