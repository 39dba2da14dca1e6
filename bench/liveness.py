"""Liveness on recorded approaches (``simulators.spoofs``): which sequences the gate's vision lets through.

Every sequence goes frame by frame through the production pipeline (``GateVision.decide``, no thermal camera,
so the colour and motion cues decide) until it reaches a decision. Per kind of sequence:
* ``accepted`` — a live verdict (the door would open for a resident, or the visitor flow start);
* ``refused`` — a presentation attack named (the gate raises its spoof alarm);
* ``undecided`` — still waiting when the recording ends (the screen asks the person to turn their head).
For attacks, ``accepted`` is the attack presentation classification error rate (APCER); for live kinds,
1 − ``accepted`` is the bona fide rejection rate (BPCER) within the recording.
"""

from __future__ import annotations

import statistics
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from simulators.spoofs import ATTACKS, KINDS, sequences


def run(n_per_kind: int = 20, seconds: float = 4.0, fps: float = 10.0, seed: int = 1) -> dict[str, Any]:
    from edge.vision.config import VisionConfig
    from edge.vision.gallery import Gallery
    from edge.vision.pipeline import GateVision
    from simulators.camera import enrol_photo

    with tempfile.TemporaryDirectory(prefix="ce-liveness-") as tmp:
        enrol_photo(Path(tmp) / "gallery.db", b"bench", "res-astronaut", "astronaut")
        gallery = Gallery(Path(tmp) / "gallery.db", b"bench")
        vision = GateVision(gallery, VisionConfig(thermal=None))
        assert vision.motion is not None
        results: dict[str, Counter[str]] = {k: Counter() for k in KINDS}
        times: dict[str, list[float]] = {k: [] for k in KINDS}
        parallax: dict[str, list[float]] = {k: [] for k in KINDS}
        try:
            for seq in sequences(n_per_kind, seed, seconds, fps):
                vision.motion.reset()
                verdict, peak = "undecided", 0.0
                for rgb, t in seq.frames:
                    d = vision.decide(rgb, None, None, t)
                    if d.liveness is not None:
                        peak = max(peak, d.liveness.cues.get("parallax", 0.0))
                    if d.outcome in ("match", "unknown"):
                        verdict = "accepted"
                    elif d.outcome == "spoof":
                        verdict = "refused"
                    if verdict != "undecided":
                        times[seq.kind].append(t)
                        break
                results[seq.kind][verdict] += 1
                parallax[seq.kind].append(peak)
        finally:
            vision.close()
            gallery.close()
    by_kind = {}
    for kind in KINDS:
        n = sum(results[kind].values())
        by_kind[kind] = {
            "sequences": n,
            **{v: round(results[kind][v] / n, 3) for v in ("accepted", "refused", "undecided")},
            "decided_at_s_p50": round(statistics.median(times[kind]), 2) if times[kind] else None,
            "parallax_p50": round(statistics.median(parallax[kind]), 4),
        }
    attacks = [k for k in ATTACKS if k != "replay"]
    return {
        "sequences_per_kind": n_per_kind,
        "seconds": seconds,
        "fps": fps,
        "by_kind": by_kind,
        "apcer_print_and_screen": round(sum(results[k]["accepted"] for k in attacks) / (len(attacks) * n_per_kind), 3),
        "bpcer_live": round(1 - results["live"]["accepted"] / n_per_kind, 3),
    }
