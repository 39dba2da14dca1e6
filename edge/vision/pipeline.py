"""The gate's vision pipeline: one camera frame (plus a thermal burst) in, one decision out.

detect → largest face (others counted) → refine its keypoints on a crop → follow it across frames (the motion
liveness cue, where configured) → align → quality gate → thermal screening → liveness → embed → 1:N search →
decision. Precedence: no face, then "retry" prompts (quality, an unsure thermal reading, or a face that has not
yet shown depth), then spoof, fever, resident match, unknown face (the visitor flow). A spoof is still
embedded so the alarm can name whose photo was presented. Models are loaded once; ``adecide`` runs the work on
one dedicated thread so the agent's event loop never waits on inference.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from edge.inference import trim_heap
from edge.thermal.frame import ThermalFrame
from edge.thermal.screen import Reading, ThermalScreen
from edge.vision import liveness as live
from edge.vision.config import VisionConfig
from edge.vision.detect import FaceDetector
from edge.vision.embed import Embedder, align
from edge.vision.gallery import Gallery
from edge.vision.motion import MotionTracker
from edge.vision.quality import Quality, assess

Outcome = Literal["no_face", "retry", "spoof", "fever", "match", "unknown"]
PROMPTS: dict[Outcome, str] = {
    "no_face": "",
    "retry": "please look at the camera",
    "spoof": "please see the attendant",
    "fever": "please see the attendant",
    "match": "welcome",
    "unknown": "visitor? please enter the flat number",
}
TURN_HEAD = "please turn your head a little"


@dataclass(slots=True)
class Decision:
    outcome: Outcome
    prompt: str
    resident_id: str | None = None
    score: float = 0.0
    second: float = 0.0
    match_reason: str = ""
    faces: int = 0  # faces in the frame; the decision is about the largest
    quality: Quality | None = None
    thermal: Reading | None = None
    liveness: live.Liveness | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        d["thermal"] = self.thermal.as_dict() if self.thermal else None
        return d


class GateVision:
    def __init__(self, gallery: Gallery, config: VisionConfig | None = None) -> None:
        self.config = config or VisionConfig()
        self.gallery = gallery
        cfg = self.config
        self.detector = FaceDetector(
            cfg.detector, cfg.detector_threads, delegate=cfg.delegate, library=cfg.delegate_library
        )
        self.embedder = Embedder(cfg.threads, cfg.delegate, cfg.delegate_library)
        self.thermal = ThermalScreen(cfg.thermal) if cfg.thermal else None
        self.motion = MotionTracker() if cfg.motion_liveness else None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vision")
        trim_heap()

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    def decide(
        self,
        rgb: npt.NDArray[np.uint8],
        thermal: list[ThermalFrame] | None = None,
        ambient_c: float | None = None,
        ts: float | None = None,
    ) -> Decision:
        """One frame's decision; ``ts`` is its capture time (monotonic s), which the motion cue measures in."""
        t: dict[str, float] = {}
        models_before = self._model_ms()
        t0 = time.perf_counter()
        faces = self.detector.detect(rgb)
        t1 = time.perf_counter()
        t["detect_ms"] = (t1 - t0) * 1000
        if not faces:
            return self._done(Decision("no_face", PROMPTS["no_face"]), t, models_before, t0)
        face = self.detector.refine(rgb, faces[0])
        crop = align(rgb, face)
        quality = assess(face, crop, self.config.quality)
        motion = None
        if self.motion is not None:  # followed on every frame; depth counted only from frames good enough
            (rx, ry), (lx, ly) = face.keypoints[0], face.keypoints[1]
            eye_px = float(np.hypot(lx - rx, ly - ry))
            motion = self.motion.update(rgb, face.box, eye_px, time.monotonic() if ts is None else ts, quality.ok)
        t2 = time.perf_counter()
        t["align_quality_ms"] = (t2 - t1) * 1000
        d = Decision("retry", quality.prompt, faces=len(faces), quality=quality)
        if not quality.ok:
            return self._done(d, t, models_before, t0)
        liveness_features = None
        if self.thermal is not None:
            if not thermal:
                d.prompt = "please look at the camera"
                return self._done(d, t, models_before, t0)
            d.thermal = self.thermal.screen(thermal, face.box, face.keypoints, ambient_c)
            liveness_features = d.thermal.features
        t3 = time.perf_counter()
        t["thermal_ms"] = (t3 - t2) * 1000
        lv = self.config.liveness
        if lv.enabled:
            d.liveness = live.assess(
                liveness_features, crop if lv.colour else None, motion, lv, thermal=self.thermal is not None
            )
        t3 = time.perf_counter()
        th = d.thermal
        if th is not None and th.verdict == "retry":
            # an unsure reading (too far, unstable, out of view) proves nothing either way: ask again; a sure
            # reading that is no body temperature goes on to liveness, which names the spoof
            unsure = th.features is None or th.confidence < self.thermal.config.min_confidence  # type: ignore[union-attr]
            if unsure or d.liveness is None or d.liveness.live:
                d.prompt = th.reason if th.reason.startswith("please") else PROMPTS["retry"]
                return self._done(d, t, models_before, t0)
        if d.liveness is not None and d.liveness.pending:  # no depth seen yet: wait, then ask for a small turn
            asked = motion is not None and motion.age_s >= lv.ask_after_s
            d.prompt = TURN_HEAD if asked else ""
            return self._done(d, t, models_before, t0)
        emb = self.embedder.embed_aligned(crop)
        t4 = time.perf_counter()
        t["embed_ms"] = (t4 - t3) * 1000
        m = self.gallery.search(emb)
        t["search_ms"] = (time.perf_counter() - t4) * 1000
        d.resident_id, d.score, d.second, d.match_reason = (
            m.resident_id,
            round(m.score, 4),
            round(m.second, 4),
            m.reason,
        )
        if d.liveness is not None and not d.liveness.live:
            d.outcome = "spoof"
            if self.motion is not None and motion is not None and d.liveness.flat_motion:
                self.motion.flat = True  # this face stays a picture until it leaves (later depth changes nothing)
        elif d.thermal is not None and d.thermal.verdict == "fever":
            d.outcome = "fever"
        elif m.resident_id is not None:
            d.outcome = "match"
        else:
            d.outcome = "unknown"
        d.prompt = PROMPTS[d.outcome]
        return self._done(d, t, models_before, t0)

    def _model_ms(self) -> float:
        models = [self.detector.model, self.embedder.model] + ([self.thermal.model] if self.thermal else [])
        return sum(m.total_ms for m in models)

    def _done(self, d: Decision, t: dict[str, float], models_before: float, t0: float) -> Decision:
        t["inference_ms"] = self._model_ms() - models_before
        t["total_ms"] = (time.perf_counter() - t0) * 1000
        d.timings_ms = {k: round(v, 3) for k, v in t.items()}
        return d

    async def adecide(
        self,
        rgb: npt.NDArray[np.uint8],
        thermal: list[ThermalFrame] | None = None,
        ambient_c: float | None = None,
        ts: float | None = None,
    ) -> Decision:
        """``decide`` on the vision thread; the event loop stays free."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self.decide, rgb, thermal, ambient_c, ts
        )
