"""The motion liveness cue on recorded approaches made from the shipped photos (``simulators.spoofs``): live
people get through, prints and phone screens of the same people do not; and the cue's verdicts one by one."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from bench.liveness import run
from edge.vision.config import LivenessConfig
from edge.vision.liveness import assess
from edge.vision.motion import Motion
from simulators.spoofs import record, sequence


def test_prints_and_screens_never_pass_and_people_do() -> None:
    report = run(n_per_kind=3, seconds=3.5, fps=10.0, seed=7)
    kinds = report["by_kind"]
    for attack in ("paper", "screen"):
        assert kinds[attack]["accepted"] == 0.0, (attack, kinds[attack])
        assert kinds[attack]["parallax_p50"] < 0.006  # a plane leaves almost nothing unexplained
    assert kinds["live"]["accepted"] == 1.0, kinds["live"]
    assert kinds["live"]["decided_at_s_p50"] <= 2.0  # including the walk up (0.6 s)
    assert kinds["live_still"]["accepted"] < 1.0 or kinds["live_still"]["decided_at_s_p50"] > 0.5
    assert report["apcer_print_and_screen"] == 0.0 and report["bpcer_live"] == 0.0
    # the known miss, kept visible: a video of the resident on a screen shows a real head's parallax
    assert kinds["replay"]["parallax_p50"] > 0.01


def test_the_cue_waits_then_names_a_flat_face() -> None:
    cfg = LivenessConfig()
    young = assess(None, None, Motion(0.002, 0.1, 5, 0.5, 40), cfg, thermal=False)
    assert young.pending and not young.live
    still = assess(None, None, Motion(0.002, 0.1, 60, 6.0, 40), cfg, thermal=False)
    assert still.pending and not still.live  # hardly moved: no proof either way, the person is asked to turn
    waved = assess(None, None, Motion(0.003, 0.8, 60, 6.0, 40), cfg, thermal=False)
    assert not waved.pending and not waved.live and "flat" in waved.reason
    turned = assess(None, None, Motion(0.03, 0.3, 12, 1.2, 40), cfg, thermal=False)
    assert turned.live and not turned.pending
    grey = np.full((112, 112, 3), 128, np.uint8)  # depth shown, but no colour: a greyscale display
    assert not assess(None, grey, Motion(0.03, 0.3, 12, 1.2, 40), cfg, thermal=False).live


def test_sequences_are_recorded_for_replay(tmp_path: Path) -> None:
    seq = sequence("paper", "grace_hopper", seed=3, seconds=0.5)
    where = record(seq, tmp_path)
    frames = sorted(where.glob("*.png"))
    assert len(frames) == 5 and (where / "sequence.json").exists()
    back = cv2.imread(str(frames[0]))[:, :, ::-1]
    assert np.array_equal(back, seq.frames[0][0])
