"""Where the gate's eyes come from: a frame source returns the latest RGB frame with the thermal frames taken
since the previous one. ``opencv`` reads a V4L2/USB/RTSP camera; ``simulated`` (for rigs, demos and the
district simulator) renders arrivals of real face photos and a thermal array (``simulators.gate_scene``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from edge.drivers.config import CameraConfig, OpenCVCameraConfig, SimulatedCameraConfig
from edge.drivers.io import DriverError
from edge.thermal.frame import ThermalFrame


@dataclass(slots=True)
class Frame:
    rgb: npt.NDArray[np.uint8]
    thermal: list[ThermalFrame] = field(default_factory=list)
    ambient_c: float | None = None
    ts: float | None = None  # when it was captured (monotonic seconds): motion is measured in capture time


__all__ = ["CameraConfig", "Frame", "FrameSource", "OpenCVCamera", "SimulatedCameraConfig"]


class FrameSource(Protocol):
    async def read(self) -> Frame: ...

    async def close(self) -> None: ...


class OpenCVCamera:
    def __init__(self, cfg: OpenCVCameraConfig) -> None:
        import cv2

        self._cv2 = cv2
        self.cap = cv2.VideoCapture(cfg.device)
        if not self.cap.isOpened():
            raise DriverError(f"camera {cfg.device!r} cannot be opened")
        self.cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
        self.cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)

    async def read(self) -> Frame:
        import time

        ok, bgr = await asyncio.to_thread(self.cap.read)
        ts = time.monotonic()
        if not ok:
            raise DriverError("camera returned no frame")
        return Frame(np.ascontiguousarray(bgr[:, :, ::-1]), ts=ts)

    async def close(self) -> None:
        self.cap.release()
