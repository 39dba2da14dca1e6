"""``civicedge bench gate``: the gate's vision pipeline on simulated arrivals with the real models.

The pipeline runs in its own process, as on a gateway (so its RSS is the gate's, not the simulator's), opening
an encrypted gallery file prepared here: the astronaut (three enrolment photos) among ``residents`` synthetic
identities (three random unit vectors each); visitors: Grace Hopper. The simulator renders the arrivals first,
then streams each frame and thermal burst over a pipe back-to-back, as a camera at full frame rate would. Each
arrival is one frame at the stop distance; 5 % run a fever, 5 % hold up a paper photo or a screen. Reports
decision latency (frame in → decision out, measured in the gate process), model time alone, their ratio, 1:N
search over 50,000 identities, temperature error against the simulator's truth, decision accuracy and the gate
process's RSS.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import tempfile
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from bench.stats import percentile

WARMUP = 10


def _synthetic(n: int, per: int, seed: int) -> list[tuple[str, Any, str | None]]:
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, per, 128)).astype(np.float32)
    return [(f"syn-{i:05d}", vecs[i], None) for i in range(n)]


def _gate(conn: Connection, work: str, threads: int, delegate: str = "xnnpack") -> None:
    """The gate process: open the gallery from disk, then decide on every frame that arrives until None."""
    import psutil

    from edge.vision.config import VisionConfig
    from edge.vision.gallery import Gallery
    from edge.vision.pipeline import GateVision

    gallery = Gallery(Path(work) / "gallery.db", b"bench-secret")
    vision = GateVision(gallery, VisionConfig(threads=threads, delegate=delegate))
    conn.send(vision.config.thermal.fever_c if vision.config.thermal else None)
    while (item := conn.recv()) is not None:
        d = vision.decide(*item)
        temp = d.thermal.temperature_c if d.thermal else None
        conn.send((d.outcome, d.resident_id, temp, d.timings_ms))
    conn.send(psutil.Process().memory_info().rss / 2**20)
    vision.close()
    gallery.close()


def build_gallery(path: Path, residents: int, seed: int) -> None:
    """What the cloud would have pushed: the astronaut (three photos) and synthetic residents."""
    from edge.vision.detect import FaceDetector
    from edge.vision.embed import Embedder
    from edge.vision.gallery import Gallery
    from simulators.camera import photo

    det, emb = FaceDetector(), Embedder()
    a = photo("astronaut")
    shots = [a, np.ascontiguousarray(a[:, ::-1]), np.clip(a.astype(np.float32) * 0.8, 0, 255).astype(np.uint8)]
    embs = np.stack([emb.embed(s, det.refine(s, det.detect(s)[0])) for s in shots])
    g = Gallery(path, b"bench-secret")
    g.enroll_many([("res-astronaut", embs, "12-0304"), *_synthetic(residents, 3, seed)])
    g.close()


def search_ms(work: Path, identities: int = 50_000, queries: int = 200) -> float:
    from edge.vision.gallery import Gallery

    g = Gallery(work / "search.db", b"bench-secret")
    g.enroll_many(_synthetic(identities, 1, 2))
    q = np.random.default_rng(3).normal(size=(queries, 128)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    times = []
    for v in q:
        t0 = time.perf_counter()
        g.search(v)
        times.append((time.perf_counter() - t0) * 1000)
    g.close()
    return statistics.median(times)


def per_delegate(work: Path, frames: list[Any], threads: int) -> dict[str, Any]:
    """Decision and model time on the same frames for every LiteRT delegate this machine can load."""
    from edge.inference import DELEGATE_LIBRARIES, DelegateError
    from edge.vision.config import VisionConfig
    from edge.vision.gallery import Gallery
    from edge.vision.pipeline import GateVision

    out: dict[str, Any] = {}
    gallery = Gallery(work / "gallery.db", b"bench-secret")
    try:
        for delegate in ("cpu", "xnnpack", *DELEGATE_LIBRARIES):
            try:
                vision = GateVision(gallery, VisionConfig(threads=threads, delegate=delegate))
            except DelegateError as exc:
                out[delegate] = {"available": False, "why": str(exc).split(";")[0]}
                continue
            try:
                decisions, inference = [], []
                for i, item in enumerate(frames):
                    d = vision.decide(*item)
                    if i >= WARMUP and d.outcome not in ("no_face", "retry"):
                        decisions.append(d.timings_ms["total_ms"])
                        inference.append(d.timings_ms["inference_ms"])
                out[delegate] = {
                    "available": True,
                    "decision_ms_p50": round(percentile(decisions, 50), 2),
                    "inference_ms_p50": round(percentile(inference, 50), 2),
                }
            finally:
                vision.close()
    finally:
        gallery.close()
    return out


def run(
    n_arrivals: int = 300, residents: int = 2000, threads: int = 2, seed: int = 11, delegate: str = "xnnpack"
) -> dict[str, Any]:
    import cv2

    from simulators.camera import SimulatedCamera, arrivals

    cv2.setNumThreads(1)  # the simulator's OpenCV threads would otherwise spin on the cores the gate needs

    with tempfile.TemporaryDirectory(prefix="ce-bench-gate-") as tmp:
        work = Path(tmp)
        build_gallery(work / "gallery.db", residents, seed)
        ours, theirs = mp.Pipe()
        ctx = mp.get_context("spawn")
        proc = ctx.Process(target=_gate, args=(theirs, tmp, threads, delegate))
        proc.start()
        fever_c = ours.recv()
        cam = SimulatedCamera()
        cam.thermal.rng = np.random.default_rng(seed)
        decision, inference, temp_err = [], [], []
        phases: dict[str, list[float]] = {}
        outcomes: Counter[str] = Counter()
        mistakes: Counter[str] = Counter()
        correct = 0
        # render first, then stream back-to-back as a camera at full frame rate would (the gate stays busy;
        # an idle process pays a wake-up on every frame that belongs to the VM, not to the pipeline)
        stream = list(arrivals(cam, ["astronaut", "grace_hopper"], n_arrivals + WARMUP, 0.05, 0.05, 1))
        for i, arr in enumerate(stream):
            frame, burst = arr.steps[-1]
            ours.send((frame, burst))
            outcome, resident, temp, timings = ours.recv()
            if i < WARMUP:
                continue
            outcomes[outcome] += 1
            spoof = arr.scene.kind != "person"
            fever = fever_c is not None and arr.scene.core_c >= fever_c
            want = "spoof" if spoof else "fever" if fever else "match" if arr.person == "astronaut" else "unknown"
            right = outcome == want and (want != "match" or resident == "res-astronaut")
            correct += right
            if not right:
                mistakes[f"{want}->{outcome}"] += 1
            if outcome in ("spoof", "fever", "match", "unknown"):
                decision.append(timings["total_ms"])
                inference.append(timings["inference_ms"])
                for k, v in timings.items():
                    phases.setdefault(k, []).append(v)
            if not spoof and temp is not None:
                temp_err.append(abs(temp - arr.scene.core_c))
        ours.send(None)
        rss = ours.recv()
        proc.join(30)
        s50k = search_ms(work)
        delegates = per_delegate(work, [(a.steps[-1][0], a.steps[-1][1]) for a in stream[: WARMUP + 60]], threads)
        p50_dec, p50_inf = percentile(decision, 50), percentile(inference, 50)
        return {
            "arrivals": n_arrivals,
            "residents": residents + 1,
            "threads": threads,
            "delegate": delegate,
            "decision_ms_p50": round(p50_dec, 2),
            "decision_ms_p99": round(percentile(decision, 99), 2),
            "inference_ms_p50": round(p50_inf, 2),
            "overhead_ratio": round(p50_dec / p50_inf, 3) if p50_inf else None,
            "phases_ms_p50": {k: round(percentile(v, 50), 2) for k, v in phases.items()},
            "search_ms_50k": round(s50k, 3),
            "temp_abs_err_p50_c": round(percentile(temp_err, 50), 3),
            "temp_abs_err_p95_c": round(percentile(temp_err, 95), 3),
            "decisions_correct": round(correct / n_arrivals, 4),
            "outcomes": dict(outcomes),
            "mistakes": dict(mistakes),
            "rss_mb": round(rss, 1),
            "per_delegate": delegates,
        }
