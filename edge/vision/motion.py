"""The motion liveness cue: is the face in front of the camera a solid head, or a flat picture?

A picture — a print held up, a phone or tablet screen — is a plane: however it is moved, tilted or brought
closer, every point of it moves as one homography predicts. A head is not flat: the nose stands out a few
centimetres from the cheeks and the ears sit far behind them, so as soon as the head turns a little, or moves
across the view, points at different depths move differently (parallax). The tracker follows corner points
on the face from frame to frame (pyramidal Lucas–Kanade with a forward–backward check), fits the best
homography from the track's key frame to the current frame, and measures what it cannot explain: the
residual of the worse-fitting points, in eye distances so that it does not depend on how far away the face is.

What it sees over a track:
* ``parallax`` — such a residual reached in two frames running within the latest few frames: a live face that
  turns or moves shows it within a second. Evidence is about the face reported now and nothing else: points
  must stay inside it, the box must be where the points went, and whenever the points are lost a new key frame
  starts the evidence again — depth shown by one face never vouches for a picture raised in front of it;
* ``motion`` — how far the face moved in the image (eye distances): a picture that moved a lot and never
  showed depth is a presentation attack, while a face that has hardly moved proves nothing yet (a person
  standing perfectly still is asked to turn their head a little).
Every half of the face (left, right, upper, lower) must show depth of its own, and losing many points at once
starts again: a picture raised in front of part of a live face leaves that part flat. A video of a real person
played on a screen shows the recorded head's parallax and passes this cue; thermal screening catches it (a
screen has no body heat).
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

Box = tuple[float, float, float, float]
U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

MIN_POINTS = 12  # fewer tracked points than this: start again from a new key frame (the track goes on)
FB_MAX_PX = 0.8  # forward-backward disagreement above this: the point was not followed
GAP_S = 1.0  # no face for this long: the next face starts a new track
STEP_PX = 1.0  # a point this far off the frame-to-frame homography was lost
MAX_SCALE_LOG = 0.05  # the face grew or shrank more than ≈ 5 % since the key frame: start a new key frame
RECENT = 6  # depth must have been shown within the latest frames, not once at some point of the track
BOX_DRIFT = 0.25  # face widths: the box the detector reports may be this far from where the points went
INSIDE_SHARE = 0.6  # at least this share of the followed points must lie on the face reported now
MAX_LOSS = 0.3  # more of the followed points than this lost in one frame: start again
HALF_POINTS = 8  # a half of the face with fewer followed points than this cannot show depth
HALF_MIN = 0.004  # eye distances: each half's own residual (a flat picture's: ≈ 0.002; a head's: ≥ 0.005)
CORNER_MARGIN_PX = 8  # pixels around the face's ellipse the corner search reads (its window is a few pixels)
PERCENTILE = 85  # the residual of the worse-fitting points (the nose, the face's outline), not the worst one


@dataclass(frozen=True, slots=True)
class Motion:
    parallax: float  # largest depth residual seen in this track, eye distances
    motion: float  # largest image displacement from a key frame in this track, eye distances
    frames: int  # frames in this track
    age_s: float  # time since the track began
    points: int  # points followed in the latest frame
    flat: bool = False  # this track was already judged a picture


class MotionTracker:
    """Follows one face across frames; ``update`` once per frame in which the face was found."""

    def __init__(self) -> None:
        self._gray: U8 | None = None
        self._key: F32 | None = None  # points in the key frame
        self._pts: F32 | None = None  # the same points in the latest frame
        self._box: Box | None = None
        self._t_last = -math.inf
        self._t0 = 0.0
        self._frames = 0
        self._recent: deque[float] = deque(maxlen=RECENT)  # residuals of the latest measured frames
        self._motion = 0.0
        self._moved = 0.0  # displacement accumulated over earlier key frames
        self.flat = False  # set by the pipeline once this track is judged a picture

    def reset(self) -> None:
        self._gray = self._key = self._pts = self._box = None
        self._t_last = -math.inf

    def _same_face(self, gray: U8, box: Box, t: float) -> bool:
        if self._box is None or self._gray is None or t - self._t_last > GAP_S or gray.shape != self._gray.shape:
            return False
        x0, y0, x1, y1 = box
        px0, py0, px1, py1 = self._box
        w = max(px1 - px0, 1.0)
        jump = math.hypot((x0 + x1 - px0 - px1) / 2, (y0 + y1 - py0 - py1) / 2) / w
        size = (x1 - x0) / w
        return jump < 0.5 and 0.67 < size < 1.5

    @staticmethod
    def _ellipse(box: Box) -> tuple[tuple[int, int], tuple[int, int]]:
        x0, y0, x1, y1 = box
        return (int((x0 + x1) / 2), int(y0 + (y1 - y0) * 0.55)), (
            max(int((x1 - x0) * 0.42), 2),
            max(int((y1 - y0) * 0.5), 2),
        )

    @classmethod
    def _inside(cls, pts: F32, box: Box, margin: float = 1.15) -> npt.NDArray[np.bool_]:
        (cx, cy), (ax, ay) = cls._ellipse(box)
        d = ((pts[:, 0] - cx) / (ax * margin)) ** 2 + ((pts[:, 1] - cy) / (ay * margin)) ** 2
        return np.asarray(d <= 1.0)

    @classmethod
    def _corners(cls, gray: U8, box: Box) -> F32 | None:
        """Corner points inside the face (an ellipse within the box: no background, no picture border).

        Looked for in the ellipse's bounding rectangle and a margin (the corner measure reads a few pixels
        around each one), not the whole frame: the same corners, a tenth of the work for a face at the gate."""
        h, w = gray.shape
        (cx, cy), (ax, ay) = cls._ellipse(box)
        x0, y0 = max(cx - ax - CORNER_MARGIN_PX, 0), max(cy - ay - CORNER_MARGIN_PX, 0)
        x1, y1 = min(cx + ax + CORNER_MARGIN_PX + 1, w), min(cy + ay + CORNER_MARGIN_PX + 1, h)
        if x1 - x0 < 3 or y1 - y0 < 3:  # the face is off the frame
            return None
        region = gray[y0:y1, x0:x1]
        mask = np.zeros(region.shape, np.uint8)
        cv2.ellipse(mask, (cx - x0, cy - y0), (ax, ay), 0, 0, 360, 255, -1)
        min_d = max(2.0, (box[2] - box[0]) / 30)
        pts = cv2.goodFeaturesToTrack(region, maxCorners=120, qualityLevel=0.005, minDistance=min_d, mask=mask)
        if pts is None or len(pts) < MIN_POINTS:
            return None
        return (pts.reshape(-1, 2) + np.array([x0, y0], np.float32)).astype(np.float32)

    def _rekey(self, gray: U8, box: Box) -> None:
        """A new key frame. Depth evidence is only ever about the points followed since the key frame: a
        picture swapped in for a live face breaks the tracks, and the live face's parallax goes with them."""
        if self._key is not None and self._pts is not None and len(self._pts):  # lost points, not walking up
            self._moved += float(np.median(np.linalg.norm(self._pts - self._key, axis=1)))
        self._recent.clear()
        self._key = self._corners(gray, box)
        self._pts = None if self._key is None else self._key.copy()

    @property
    def parallax(self) -> float:
        """Depth shown lately: the residual that two frames running both reached, over the latest frames."""
        r = list(self._recent)
        return max((min(a, b) for a, b in itertools.pairwise(r)), default=0.0)

    def update(self, rgb: U8, box: Box, eye_px: float, t: float, measure: bool = True) -> Motion:
        """Follow the face into this frame; ``measure`` False (a frame the quality gate refused: blurred, too
        small, turned away) keeps the tracks going but records no depth from it."""
        gray: U8 = np.asarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), dtype=np.uint8)
        if not self._same_face(gray, box, t):
            self._t0, self._frames, self._motion, self._moved, self.flat = t, 0, 0.0, 0.0, False
            self._recent.clear()
            self._key = self._pts = None
        self._frames += 1
        eye_px = max(eye_px, 1.0)
        if self._key is None or self._pts is None or self._gray is None:
            self._rekey(gray, box)
        else:
            self._follow(gray, box, eye_px, measure)
            if self._pts is None or len(self._pts) < MIN_POINTS:
                self._rekey(gray, box)
        self._gray, self._box, self._t_last = gray, box, t
        return Motion(
            round(self.parallax, 4),
            round(self._motion, 4),
            self._frames,
            round(t - self._t0, 3),
            0 if self._pts is None else len(self._pts),
            self.flat,
        )

    def _follow(self, gray: U8, box: Box, eye_px: float, measure: bool) -> None:
        assert self._gray is not None and self._key is not None and self._pts is not None and self._box is not None
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)
        lk = {"winSize": (21, 21), "maxLevel": 3, "criteria": criteria}
        fwd, st1, _ = cv2.calcOpticalFlowPyrLK(self._gray, gray, self._pts, None, **lk)  # type: ignore[call-overload]
        back, st2, _ = cv2.calcOpticalFlowPyrLK(gray, self._gray, fwd, None, **lk)  # type: ignore[call-overload]
        fwd = fwd.reshape(-1, 2).astype(np.float32)
        fb = np.linalg.norm(back.reshape(-1, 2) - self._pts, axis=1)
        good = (st1.reshape(-1) == 1) & (st2.reshape(-1) == 1) & (fb < FB_MAX_PX)
        if good.sum() >= MIN_POINTS:
            # from one frame to the next any surface moves almost as a plane: a point far off that step's
            # homography was not followed (it slid along an edge), whatever the face is made of
            step, _ = cv2.findHomography(self._pts[good], fwd[good], cv2.RANSAC, STEP_PX)
            if step is None:
                good[:] = False
            else:
                off = np.linalg.norm(cv2.perspectiveTransform(self._pts[:, None, :], step).reshape(-1, 2) - fwd, axis=1)
                good &= off < STEP_PX
                # the face the detector reports now must be where the followed points went: a picture raised in
                # front of a live face moves the box to the picture while points stay on the face behind it
                (cx, cy), _axes = self._ellipse(self._box)
                moved_to = cv2.perspectiveTransform(np.array([[[cx, cy]]], np.float32), step).reshape(2)
                (nx, ny), _axes = self._ellipse(box)
                if math.hypot(moved_to[0] - nx, moved_to[1] - ny) > BOX_DRIFT * max(box[2] - box[0], 1.0):
                    good[:] = False
        if good.sum() >= MIN_POINTS:
            inside = self._inside(fwd, box)  # points that left the face now reported are not about this face
            if inside[good].sum() < INSIDE_SHARE * good.sum():
                good[:] = False
            good &= inside
        if good.sum() < (1 - MAX_LOSS) * len(good):
            # many points lost at once: something came between the camera and the face (a picture raised in
            # front of part of it); what was measured before is not about what is there now
            self._pts = None
            return
        self._key, self._pts = self._key[good], fwd[good]
        if len(self._pts) < MIN_POINTS:
            return
        spread = float(np.std(self._pts, axis=0).sum() / max(np.std(self._key, axis=0).sum(), 1e-6))
        if abs(math.log(max(spread, 1e-6))) > MAX_SCALE_LOG:
            # still walking up: coming closer shows no depth (a head's parallax needs a turn or a step aside), so
            # neither parallax nor motion is measured until the size settles
            self._pts = None
            return
        moved = float(np.median(np.linalg.norm(self._pts - self._key, axis=1)))
        self._motion = max(self._motion, (self._moved + moved) / eye_px)
        h, _ = cv2.findHomography(self._key, self._pts, cv2.LMEDS)
        if h is None:
            return
        predicted = cv2.perspectiveTransform(self._key[:, None, :], h).reshape(-1, 2)
        residual = np.linalg.norm(predicted - self._pts, axis=1)
        depth = float(np.percentile(residual, PERCENTILE)) / eye_px
        # every part of the face must show depth of its own: a picture covering part of a live face leaves
        # that part exactly planar while the live rest turns
        halves = self._halves(box, eye_px)
        self._recent.append(depth if measure and min(halves) >= HALF_MIN else 0.0)

    def _halves(self, box: Box, eye_px: float) -> list[float]:
        """Depth within each half of the face (left, right, upper, lower): each half's points against their own
        best homography; a half with too few points to tell counts as flat."""
        assert self._key is not None and self._pts is not None
        (cx, cy), _axes = self._ellipse(box)
        out = []
        for part in (self._key[:, 0] < cx, self._key[:, 0] >= cx, self._key[:, 1] < cy, self._key[:, 1] >= cy):
            if part.sum() < HALF_POINTS:
                out.append(0.0)
                continue
            h, _ = cv2.findHomography(self._key[part], self._pts[part], cv2.LMEDS)
            if h is None:
                out.append(0.0)
                continue
            predicted = cv2.perspectiveTransform(self._key[part][:, None, :], h).reshape(-1, 2)
            out.append(float(np.percentile(np.linalg.norm(predicted - self._pts[part], axis=1), PERCENTILE)) / eye_px)
        return out
