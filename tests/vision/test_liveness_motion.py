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


def test_depth_shown_by_one_face_never_vouches_for_a_picture_swapped_in() -> None:
    """An accomplice turns their head in front of the camera, then raises a print of a resident in the same
    place: the resident's door must not open."""
    import tempfile

    from edge.vision.config import VisionConfig
    from edge.vision.gallery import Gallery
    from edge.vision.pipeline import GateVision
    from simulators.camera import enrol_photo

    with tempfile.TemporaryDirectory() as tmp:
        enrol_photo(Path(tmp) / "g.db", b"s", "res-astronaut", "astronaut")
        gallery = Gallery(Path(tmp) / "g.db", b"s")
        vision = GateVision(gallery, VisionConfig(thermal=None))
        try:
            live = sequence("live", "grace_hopper", seed=11, seconds=2.5).frames
            print_ = sequence("paper", "astronaut", seed=12, seconds=3.0).frames[8:]
            outcomes = []
            for i, (rgb, _t) in enumerate([*live, *print_]):
                d = vision.decide(rgb, None, None, i / 10)
                outcomes.append((i >= len(live), d.outcome, d.resident_id))
            assert any(o == "unknown" for swapped, o, _r in outcomes if not swapped)  # the accomplice was live
            assert not any(o == "match" for _s, o, _r in outcomes), "a print opened a resident's door"
            # the print raised over part of the accomplice's turning face (either side), the rest still live
            det = vision.detector
            for seed, side in ((5, "left"), (21, "right")):
                vision.motion.reset()  # type: ignore[union-attr]
                live = sequence("live", "grace_hopper", seed=seed, seconds=3.2).frames
                prints = sequence("paper", "astronaut", seed=seed, seconds=3.2).frames
                x0, _y0, x1, _y1 = det.detect(live[20][0])[0].box
                seen = []
                for i, (rgb, t) in enumerate(live):
                    if i >= 20:
                        rgb = rgb.copy()
                        if side == "left":
                            cut = int(x0 + 0.6 * (x1 - x0))
                            rgb[:, :cut] = prints[i][0][:, :cut]
                        else:
                            cut = int(x1 - 0.6 * (x1 - x0))
                            rgb[:, cut:] = prints[i][0][:, cut:]
                    seen.append(vision.decide(rgb, None, None, t).outcome)
                assert "match" not in seen, (side, seen)
        finally:
            vision.close()
            gallery.close()


def test_a_flat_verdict_sticks_and_odd_frames_do_not_break_the_tracker() -> None:
    cfg = LivenessConfig()
    later = assess(None, None, Motion(0.05, 0.8, 80, 7.0, 40, flat=True), cfg, thermal=False)
    assert not later.live and "flat" in later.reason  # depth shown after the verdict changes nothing
    long = assess(None, None, Motion(0.001, 0.05, 200, 13.0, 40), cfg, thermal=False)
    assert not long.live and not long.pending and "no depth" in long.reason

    from edge.vision.motion import MotionTracker

    tracker = MotionTracker()
    big = sequence("live", "astronaut", seed=2, seconds=1.0).frames
    box = (280.0, 180.0, 360.0, 280.0)
    tracker.update(big[-1][0], box, 60.0, 0.0)
    small = np.ascontiguousarray(big[-1][0][::2, ::2])  # the camera changed its resolution between frames
    m = tracker.update(small, (140.0, 90.0, 180.0, 140.0), 30.0, 0.1)
    assert m.frames == 1  # a new track, not an error
