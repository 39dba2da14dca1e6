"""Where a unit's eyes come from. A frame source returns the newest RGB frame, with any thermal frames taken
since the previous one. The config's ``camera.type`` picks the source from the registry in
``edge.drivers.config``: ``v4l2`` (USB, or a CSI camera the kernel exposes as /dev/videoN), ``rtsp`` (an IP
camera) and ``picamera`` (the Pi camera module, ``edge.drivers.picamera``) are built in; other sources plug in
through the ``civicedge.cameras`` entry points — the simulators' rendered cameras arrive that way, so no
production module imports them.

OpenCV sources read on their own thread and keep only the newest frame: a V4L2 driver or an RTSP stream
buffers several, and a decision must not work on a frame that waited there while the previous one was being
decided. A camera that stops (a cable, an IP camera rebooting) is reopened with a growing pause, and ``read``
says what is wrong instead of waiting for ever.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import numpy as np
import numpy.typing as npt

from edge.drivers.config import CameraSettings, RtspCameraConfig, V4L2CameraConfig, camera_kind
from edge.drivers.io import DriverError
from edge.thermal.frame import ThermalFrame

log = logging.getLogger("civicedge.edge.camera")
# OpenCV's and FFmpeg's own chatter goes to stderr unstructured, and FFmpeg's may quote a stream's address:
# quiet by default (a source reports what is wrong itself); set these variables to see it while debugging
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
Command = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(slots=True)
class Frame:
    rgb: npt.NDArray[np.uint8]
    thermal: list[ThermalFrame] = field(default_factory=list)
    ambient_c: float | None = None  # the thermal sensor's own ambient estimate, when it has one
    ts: float | None = None  # when it was captured (monotonic seconds): motion is measured in capture time


__all__ = ["Frame", "FrameSource", "OpenCVSource", "open_camera"]


class FrameSource(Protocol):
    async def read(self) -> Frame: ...

    async def close(self) -> None: ...


def open_camera(settings: CameraSettings) -> FrameSource:
    """The frame source for a unit's ``camera`` settings (raises DriverError with the fix when it cannot be)."""
    module, _, name = camera_kind(settings.type).opener.partition(":")
    source: FrameSource = getattr(import_module(module), name)(settings)
    return source


def source_commands(source: object) -> dict[str, Command]:
    """Commands a source offers (a simulated camera's ``sim-arrive``); real cameras offer none."""
    commands = getattr(source, "commands", None)
    return dict(commands()) if callable(commands) else {}


SECRET_PARAMS = re.compile(r"pass|pwd|pw$|token|auth|key|secret|sig|cred", re.IGNORECASE)
PATH_PARAMS = re.compile(
    r"([?&;/]?)([A-Za-z_]*(?:pass|pwd|pw|token|auth|key|secret|sig|cred)[A-Za-z_]*)=([^&;/?#]*)", re.I
)


def redact(url: str) -> str:
    """A stream URL fit for logs and alarms: the password (whatever characters it holds) and any secret-looking
    query parameters replaced."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:  # the last @ ends the user info (a password may hold @, /, ? and :)
        userinfo, _, rest = rest.rpartition("@")
        user = userinfo.split(":", 1)[0].split("/", 1)[0]
        rest = f"{user}:***@{rest}" if ":" in userinfo else f"{user}@{rest}"
    rest = PATH_PARAMS.sub(lambda m: f"{m.group(1)}{m.group(2)}=***", rest)  # …/user=admin&password=x&channel=1
    parts = urlsplit(f"{scheme}{sep}{rest}")
    query = "&".join(
        f"{k}=***" if SECRET_PARAMS.search(k) else f"{k}={v}" for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


class OpenCVSource:
    """A ``cv2.VideoCapture`` read on its own thread; ``read`` returns the newest frame not yet returned."""

    def __init__(
        self, name: str, opener: Callable[[], Any], timeout_s: float = 5.0, max_backoff_s: float = 30.0
    ) -> None:
        self.name = name
        self.timeout_s = timeout_s
        self.max_backoff_s = max_backoff_s
        self.error: str | None = None  # what is wrong right now (None while frames arrive)
        self.frames = 0  # frames captured
        self.reconnects = 0
        self._opener = opener
        self._cond = threading.Condition()
        self._latest: tuple[int, npt.NDArray[np.uint8], float] | None = None
        self._returned = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"camera {name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            cap = None
            try:
                cap = self._opener()
                if cap is None or not cap.isOpened():
                    raise DriverError(f"camera {self.name} cannot be opened")
                while not self._stop.is_set():
                    ok, bgr = cap.read()
                    if not ok or bgr is None:
                        raise DriverError(f"camera {self.name} stopped sending frames")
                    self._publish(np.ascontiguousarray(bgr[:, :, ::-1]))
                    backoff = 0.5
            except Exception as exc:  # a driver or decoder failure must never end the thread
                self.error = str(exc) if isinstance(exc, DriverError) else f"camera {self.name}: {exc}"
            finally:
                if cap is not None:
                    cap.release()
            if self._stop.wait(backoff):
                return
            self.reconnects += 1
            backoff = min(backoff * 2, self.max_backoff_s)

    def _publish(self, rgb: npt.NDArray[np.uint8]) -> None:
        with self._cond:
            self.frames += 1
            self.error = None
            self._latest = (self.frames, rgb, time.monotonic())
            self._cond.notify_all()

    def _wait(self) -> Frame:
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            while self._latest is None or self._latest[0] <= self._returned:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    raise DriverError(self.error or f"camera {self.name}: no frame for {self.timeout_s:g} s")
                self._cond.wait(min(left, 0.5))
            seq, rgb, ts = self._latest
            self._returned = seq
            return Frame(rgb, ts=ts)

    async def read(self) -> Frame:
        return await asyncio.to_thread(self._wait)

    async def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        await asyncio.to_thread(self._thread.join, self.timeout_s + 1.0)


def _quiet(cv2: Any) -> None:
    if os.environ.get("OPENCV_LOG_LEVEL", "ERROR") == "ERROR":
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def open_v4l2(cfg: V4L2CameraConfig) -> OpenCVSource:
    import cv2

    _quiet(cv2)

    device = cfg.device
    if isinstance(device, str) and device.isdigit():
        device = int(device)
    where = f"/dev/video{device}" if isinstance(device, int) else device

    def opener() -> Any:
        if not os.path.exists(where):
            raise DriverError(f"camera {where} does not exist (is it plugged in? `ls /dev/video*` lists cameras)")
        if not os.access(where, os.R_OK | os.W_OK):
            raise DriverError(f"camera {where} is not readable: add the service user to the 'video' group")
        cap = cv2.VideoCapture(device, cv2.CAP_V4L2)
        if not cap.isOpened():
            raise DriverError(f"camera {where} cannot be opened by V4L2 (in use by another program?)")
        if cfg.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*cfg.fourcc))
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
        if cfg.fps:
            cap.set(cv2.CAP_PROP_FPS, cfg.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return cap

    return OpenCVSource(where, opener)


def with_credentials(url: str, user: str | None, password: str | None) -> str:
    """The URL with the account put in, percent-encoded (a password holding @, / or : would otherwise be read
    as part of the host)."""
    if user is None:
        return url
    scheme, _, rest = url.partition("://")
    cred = quote(user, safe="") + (":" + quote(password, safe="") if password is not None else "")
    return f"{scheme}://{cred}@{rest.rpartition('@')[2] if '@' in rest.split('/', 1)[0] else rest}"


def open_rtsp(cfg: RtspCameraConfig) -> OpenCVSource:
    import cv2

    _quiet(cv2)

    # FFmpeg's options for the RTSP demuxer (process-wide; every stream on a gateway uses the same transport)
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{cfg.transport}"
    ms = int(cfg.timeout_s * 1000)
    url = with_credentials(cfg.url, cfg.user, cfg.password)
    shown = redact(url)

    def opener() -> Any:
        cap = cv2.VideoCapture(
            url, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        )
        if not cap.isOpened():
            raise DriverError(f"camera {shown} cannot be opened (address, credentials, or the camera is off)")
        return cap

    return OpenCVSource(shown, opener, timeout_s=cfg.timeout_s)


class WithThermal:
    """An RGB camera with a thermal array beside it (the MLX90640 on I²C): the array is read on its own thread
    and each RGB frame carries the newest of the last ``keep`` thermal frames taken no more than ``max_age_s``
    before it (a burst for the screening, averaged per pixel) and the array's own ambient estimate. Nothing
    older is attached: a silent array means "no thermal reading", and a picture raised in front of a face is
    never screened with the face's heat from a moment before."""

    def __init__(
        self,
        camera: FrameSource,
        thermal: Any,
        keep: int,
        max_age_s: float = 0.5,
        opener: Callable[[], Any] | None = None,
    ) -> None:
        """``thermal`` is an open ThermalSource, or None with ``opener`` to open it on the reading thread (an
        array that does not answer yet is retried there while the RGB camera works on)."""
        self.camera, self.thermal, self._opener = camera, thermal, opener
        self.keep, self.max_age_s = keep, max_age_s
        self.error: str | None = None
        self._frames: list[ThermalFrame] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="thermal", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pause = 1.0
        while not self._stop.is_set():
            if self.thermal is None and self._opener is not None:
                try:
                    self.thermal = self._opener()
                except Exception as exc:  # not plugged in, I²C off, no permission: say so, try again
                    self.error = str(exc)
                    log.warning("thermal camera cannot be opened", extra={"error": str(exc)})
                    self._stop.wait(pause)
                    pause = min(pause * 2, 60.0)
                    continue
            try:
                frame = self.thermal.read()
            except Exception as exc:  # an I²C error must not end the thread: report, pause, go on
                self.error = str(exc)
                log.warning("thermal camera", extra={"error": str(exc)})
                self._stop.wait(1.0)
                continue
            self.error = None
            with self._lock:
                self._frames = [*self._frames[-(self.keep - 1) :], frame] if self.keep > 1 else [frame]

    def commands(self) -> dict[str, Command]:
        return source_commands(self.camera)

    async def read(self) -> Frame:
        frame = await self.camera.read()
        taken = frame.ts if frame.ts is not None else time.monotonic()
        with self._lock:
            frame.thermal = [f for f in self._frames if taken - f.t <= self.max_age_s]
        frame.ambient_c = getattr(self.thermal, "ambient_c", None) if frame.thermal else None
        return frame

    async def close(self) -> None:
        self._stop.set()
        await self.camera.close()
        await asyncio.to_thread(self._thread.join, 5.0)
        close = getattr(self.thermal, "close", None)
        if callable(close):
            close()
