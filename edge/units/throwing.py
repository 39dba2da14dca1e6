"""High-altitude throwing: a camera at the foot of a building looks up its face; ``edge.vision.falling`` finds
objects whose path is a free fall and estimates the floor band they came from. Each one is a critical alarm
(``throwing.<facade>.<time>``: floor band, time, fitted acceleration) with a strip of frames around the fall,
sent on the bulk lane (``media.snapshot``, purpose ``throwing``) for the operator and the police, and kept on
the gateway in ``keep_dir`` when set. The frame work runs on a worker thread, so the agent stays responsive;
frames that arrive while the detector is still busy are dropped and counted (``frames_dropped``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.drivers.camera import FrameSource, open_camera, source_commands
from edge.units.base import Unit, UnitContext
from edge.units.community_config import ThrowingConfig
from edge.units.media import jpeg_snapshot
from edge.vision.falling import Calibration, Detection, FallDetector
from protocol.envelope import now_ms
from protocol.messages import AlarmRaise

log = logging.getLogger("civicedge.edge.throwing")
STRIP_MAX_BYTES = 140_000


class ThrowingUnit(Unit):
    name = "throwing"

    def __init__(self, cfg: ThrowingConfig, camera: FrameSource | None = None, keep_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.camera = camera
        self.keep_dir = keep_dir or (Path(cfg.keep_dir) if cfg.keep_dir else None)
        self.detections: list[dict[str, Any]] = []
        self.frames = 0
        self.frames_dropped = 0
        self.frame_ms: collections.deque[float] = collections.deque(maxlen=1000)
        self._ring: collections.deque[tuple[float, np.ndarray]] = collections.deque(maxlen=int(cfg.fps * 6))
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="throwing")
        self._last_alarm = -1e9
        self.detector: FallDetector | None = None
        self._ctx: UnitContext | None = None

    async def run(self, ctx: UnitContext) -> None:
        self._ctx = ctx
        ctx.register_command("throwing-status", self._cmd_status)
        camera = self.camera = self.camera or open_camera(self.cfg.camera)
        for name, handler in source_commands(camera).items():
            ctx.register_command(name, handler)
        t0: float | None = None
        busy: asyncio.Future[list[Detection]] | None = None
        loop = asyncio.get_running_loop()
        try:
            while True:
                frame = await camera.read()
                ts = frame.ts if frame.ts is not None else time.monotonic()
                t0 = ts if t0 is None else t0
                t = ts - t0
                self.frames += 1
                if self.detector is None:
                    h = frame.rgb.shape[0]
                    self.detector = FallDetector(
                        Calibration(h, self.cfg.floors, self.cfg.roof_y, self.cfg.ground_y, self.cfg.floor_m)
                    )
                small = cv2.resize(frame.rgb, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
                self._ring.append((t, small))
                if busy is not None and not busy.done():
                    self.frames_dropped += 1
                    continue
                if busy is not None:
                    for d in busy.result():
                        await self._alarm(d)
                busy = loop.run_in_executor(self._pool, self._process, frame.rgb, t)
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)
            await camera.close()  # type: ignore[attr-defined,unused-ignore]

    def _process(self, rgb: np.ndarray, t: float) -> list[Detection]:
        assert self.detector is not None
        t0 = time.perf_counter()
        out = self.detector.process(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), t)
        self.frame_ms.append((time.perf_counter() - t0) * 1000)
        return out

    async def _alarm(self, d: Detection) -> None:
        assert self._ctx is not None
        if d.at - self._last_alarm < self.cfg.cooldown_s and d.start - self._last_alarm < self.cfg.cooldown_s:
            return  # the same object seen twice
        self._last_alarm = d.at
        at = now_ms()
        ref = await self._strip(d, at)
        details: dict[str, Any] = {
            "facade": self.cfg.facade,
            "floor_low": d.floor_low,
            "floor_high": d.floor_high,
            "accel_g": d.accel_g,
            "at_ms": at,
            "track_points": len(d.points),
        }
        if ref:
            details["frames_ref"] = ref
        self.detections.append(details)
        await self._ctx.outbox.put(
            AlarmRaise(
                key=f"throwing.{self.cfg.facade}.{at}",
                code="throwing",
                severity="critical",
                message=f"object falling from floors {d.floor_low}–{d.floor_high} of {self.cfg.facade}",
                details=details,
            )
        )

    async def _strip(self, d: Detection, at: int) -> str | None:
        """The frames from the track's start to now, ``clip_frames`` of them side by side, as one JPEG (kept
        on the gateway when ``keep_dir`` is set)."""
        assert self._ctx is not None
        frames = [f for t, f in self._ring if d.start - 0.3 <= t <= d.at + 0.1]
        if not frames:
            return None
        idx = np.linspace(0, len(frames) - 1, min(self.cfg.clip_frames, len(frames))).round().astype(int)
        strip = np.hstack([frames[i] for i in idx])
        ref = f"throwing-{self.cfg.facade}-{at}".lower()[:64]
        snap = jpeg_snapshot(strip, ref, "throwing", STRIP_MAX_BYTES, ((80, 1.0), (60, 1.0), (50, 0.6)))
        if snap is None:
            return None
        if self.keep_dir is not None:
            self.keep_dir.mkdir(parents=True, exist_ok=True)
            (self.keep_dir / f"{ref}.jpg").write_bytes(snap[1])
        await self._ctx.outbox.put(snap[0])
        return ref

    async def _cmd_status(self, args: dict[str, Any]) -> dict[str, Any]:
        ms = sorted(self.frame_ms)
        return {
            "frames": self.frames,
            "frames_dropped": self.frames_dropped,
            "frame_ms_p50": ms[len(ms) // 2] if ms else None,
            "detections": len(self.detections),
        }
