"""Train the thermal calibration model and write it as ``edge/thermal/models/thermal_calibration.tflite``.

Data comes from the documented physical model in ``simulators/thermal.py``: random arrivals (body 35.5–40 °C,
ambient 10–38 °C, 0.35–1.1 m, off-centre, per-person canthus variation, sensor drift and noise), rendered as
bursts of thermal frames, measured by the same code the gate runs (``edge.thermal.screen.extract``, with the
face keypoints jittered as a detector would). A small MLP (4 → 32 → 32 → 1, ReLU) learns body temperature from
(t_hot, t_face, t_amb, distance); input scaling and output scaling are folded into the first and last layers so
the file takes raw readings. Training is full-batch Adam in numpy; deterministic for a given seed.

    python tools/models/train_thermal_calibration.py [--samples 6000] [--steps 3000] [--out PATH]

Prints a JSON report (held-out errors, seconds, sha256 of the file).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tflite_writer import write_mlp

from edge.thermal.screen import CALIBRATION_MODEL, FEATURES, Retry, extract
from simulators.thermal import ThermalSimulator

F32 = npt.NDArray[np.float32]


def dataset(n: int, seed: int, frames: int = 4) -> tuple[F32, F32]:
    sim = ThermalSimulator(seed=seed)
    reg = sim.registration
    xs, ys = [], []
    while len(xs) < n:
        s = sim.random_scene()
        box, kps = sim.face_in_rgb(s)
        eye = float(np.hypot(kps[1][0] - kps[0][0], kps[1][1] - kps[0][1]))
        jit = sim.rng.normal(0.0, 0.02 * eye, (6, 2))  # a detector places keypoints within a few % of the eye gap
        kps = tuple((x + dx, y + dy) for (x, y), (dx, dy) in zip(kps, jit, strict=True))
        burst = np.stack([f.temps for f in sim.frames(s, frames)])
        try:
            f = extract(burst, box, kps, reg, sim.blackbody_c)
        except Retry:
            continue
        xs.append(f.vector()[0])
        ys.append(s.core_c)
    return np.array(xs, dtype=np.float32), np.array(ys, dtype=np.float32)[:, None]


def train(x: F32, y: F32, steps: int, seed: int, hidden: int = 32) -> list[tuple[F32, F32, bool]]:
    rng = np.random.default_rng(seed)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    ym, ys = float(y.mean()), float(y.std()) + 1e-6
    xn, yn = (x - mu) / sd, (y - ym) / ys
    sizes = [x.shape[1], hidden, hidden, 1]
    params = []
    for a, b in itertools.pairwise(sizes):
        params += [rng.normal(0, np.sqrt(2 / a), (a, b)).astype(np.float32), np.zeros(b, dtype=np.float32)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for t in range(1, steps + 1):
        lr = 3e-3 * (0.5 * (1 + np.cos(np.pi * t / steps)) + 0.01)
        h1p = xn @ params[0] + params[1]
        h1 = np.maximum(h1p, 0)
        h2p = h1 @ params[2] + params[3]
        h2 = np.maximum(h2p, 0)
        out = h2 @ params[4] + params[5]
        g = 2 * (out - yn) / len(xn)
        grads = [None] * 6
        grads[4], grads[5] = h2.T @ g, g.sum(0)
        g2 = (g @ params[4].T) * (h2p > 0)
        grads[2], grads[3] = h1.T @ g2, g2.sum(0)
        g1 = (g2 @ params[2].T) * (h1p > 0)
        grads[0], grads[1] = xn.T @ g1, g1.sum(0)
        for i, gr in enumerate(grads):
            m[i] = 0.9 * m[i] + 0.1 * gr
            v[i] = 0.999 * v[i] + 0.001 * gr * gr
            params[i] -= lr * (m[i] / (1 - 0.9**t)) / (np.sqrt(v[i] / (1 - 0.999**t)) + 1e-8)
    w1, b1, w2, b2, w3, b3 = params
    # fold the scaling into the weights: the model takes raw readings and returns °C
    w1f = w1 / sd[:, None]
    b1f = b1 - mu @ w1f
    w3f, b3f = w3 * ys, b3 * ys + ym
    return [
        (w1f.T.astype(np.float32), b1f.astype(np.float32), True),
        (w2.T, b2, True),
        (w3f.T.astype(np.float32), b3f.astype(np.float32), False),
    ]


def predict(layers: list[tuple[F32, F32, bool]], x: F32) -> F32:
    for w, b, relu in layers:
        x = x @ w.T + b
        if relu:
            x = np.maximum(x, 0)
    return x


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=6000)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=CALIBRATION_MODEL)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    x, y = dataset(a.samples, a.seed)
    xt, yt = dataset(max(500, a.samples // 6), a.seed + 1000)
    t1 = time.perf_counter()
    layers = train(x, y, a.steps, a.seed)
    t2 = time.perf_counter()
    err = np.abs(predict(layers, xt) - yt)[:, 0]
    offset = float(np.median(y[:, 0] - x[:, 0]))  # what a fixed "canthus + offset" rule would do
    raw = np.abs(xt[:, 0] + offset - yt[:, 0])
    data = write_mlp(
        layers,
        a.out,
        "CivicEdge thermal calibration: (t_hot, t_face, t_amb, distance_m) -> body °C",
        ("readings", "body_c"),
    )
    report = {
        "inputs": list(FEATURES),
        "samples": a.samples,
        "steps": a.steps,
        "held_out": len(xt),
        "abs_err_p50_c": round(float(np.median(err)), 4),
        "abs_err_p95_c": round(float(np.percentile(err, 95)), 4),
        "abs_err_max_c": round(float(err.max()), 4),
        "fixed_offset_p95_c": round(float(np.percentile(raw, 95)), 4),
        "data_s": round(t1 - t0, 1),
        "train_s": round(t2 - t1, 1),
        "file": str(a.out),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
