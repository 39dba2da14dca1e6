"""Enrol and identify with the real models on real photos; margin rule; encrypted persistence; deltas."""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path

import cv2
import matplotlib.cbook as cbook
import numpy as np
import pytest
from PIL import Image
from skimage import data

from edge.vision.detect import FaceDetector
from edge.vision.embed import Embedder, align
from edge.vision.gallery import Gallery, GalleryLocked
from protocol.messages import GalleryDelta, GalleryEntry


@pytest.fixture(scope="module")
def pipeline() -> tuple[FaceDetector, Embedder]:
    return FaceDetector(), Embedder()


def embed(p: tuple[FaceDetector, Embedder], rgb: np.ndarray) -> np.ndarray:
    faces = p[0].detect(rgb)
    assert faces, "no face"
    return p[1].embed(rgb, faces[0])


def astronaut_variants() -> dict[str, np.ndarray]:
    a = data.astronaut()
    return {
        "brighter": np.clip(a.astype(int) * 1.3, 0, 255).astype(np.uint8),
        "darker": (a * 0.6).astype(np.uint8),
        "smaller": cv2.resize(a, None, fx=0.6, fy=0.6),
        "mirrored": np.ascontiguousarray(a[:, ::-1]),
    }


def grace_hopper() -> np.ndarray:
    return np.asarray(Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB"))


def test_alignment_puts_the_eyes_on_the_template(pipeline: tuple[FaceDetector, Embedder]) -> None:
    img = data.astronaut()
    face = pipeline[0].detect(img)[0]
    crop = align(img, face)
    assert crop.shape == (112, 112, 3)
    again = pipeline[0].detect(cv2.resize(crop, (224, 224)))  # the aligned crop is itself a centred face
    assert again and abs((again[0].box[0] + again[0].box[2]) / 2 - 112) < 20


def test_enrolled_person_matches_variants_and_a_stranger_does_not(
    pipeline: tuple[FaceDetector, Embedder], tmp_path: Path
) -> None:
    g = Gallery(tmp_path / "gallery.db", b"device-secret")
    g.enroll("res-astronaut", [embed(pipeline, data.astronaut())], unit="12-0304")
    rng = np.random.default_rng(7)
    for i in range(50):  # other residents: random identities
        v = rng.normal(size=128).astype(np.float32)
        g.enroll(f"res-{i:03d}", [v / np.linalg.norm(v)])
    for name, img in astronaut_variants().items():
        m = g.search(embed(pipeline, img))
        assert m.resident_id == "res-astronaut" and m.reason == "match", (name, m)
    stranger = g.search(embed(pipeline, grace_hopper()))
    assert stranger.resident_id is None and stranger.reason == "below_threshold"


def test_margin_rule_rejects_ambiguity(pipeline: tuple[FaceDetector, Embedder], tmp_path: Path) -> None:
    g = Gallery(tmp_path / "gallery.db", b"device-secret", margin=0.08)
    e = embed(pipeline, data.astronaut())
    noise = np.random.default_rng(1).normal(scale=0.01, size=128).astype(np.float32)
    g.enroll("twin-a", [e])
    g.enroll("twin-b", [e + noise])
    m = g.search(embed(pipeline, astronaut_variants()["darker"]))
    assert m.resident_id is None and m.reason == "ambiguous" and m.score > 0.9


def test_persisted_encrypted_and_locked_without_the_key(
    pipeline: tuple[FaceDetector, Embedder], tmp_path: Path
) -> None:
    path = tmp_path / "gallery.db"
    e = embed(pipeline, data.astronaut())
    g = Gallery(path, b"device-secret")
    g.enroll("res-1", [e])
    g.close()
    again = Gallery(path, b"device-secret")
    assert again.search(e).resident_id == "res-1" and len(again) == 1
    again.close()
    raw = b"".join(r[0] for r in sqlite3.connect(path).execute("SELECT blob FROM gallery"))
    assert e.astype("<f4").tobytes()[:64] not in raw  # not stored in the clear
    with pytest.raises(GalleryLocked):
        Gallery(path, b"another-device")


def test_cloud_delta_full_then_incremental(pipeline: tuple[FaceDetector, Embedder], tmp_path: Path) -> None:
    e = embed(pipeline, data.astronaut())
    b64 = base64.b64encode(e.astype("<f4").tobytes()).decode()
    g = Gallery(tmp_path / "gallery.db", b"secret")
    g.enroll("stale", [e])
    g.apply_delta(
        GalleryDelta(revision=5, upserts=[GalleryEntry(resident_id="res-9", unit="1-101", embedding_b64=b64)])
    )
    assert g.revision == 5 and len(g) == 1 and g.search(e).resident_id == "res-9"
    g.apply_delta(GalleryDelta(revision=6, base_revision=5, deletes=["res-9"]))
    assert g.revision == 6 and g.search(e).reason == "empty"


def test_search_finds_the_exact_identity_among_many(tmp_path: Path) -> None:
    g = Gallery(tmp_path / "gallery.db", b"secret")
    vecs = np.random.default_rng(3).normal(size=(300, 128)).astype(np.float32)
    for k in range(300):
        g.enroll(f"id-{k}", [vecs[k], vecs[(k + 1) % 300] * 0.1 + vecs[k]])  # two embeddings per person
    probe = vecs[217] / np.linalg.norm(vecs[217])
    m = g.search(probe)
    assert m.resident_id == "id-217" and m.score > 0.99 and m.second < 0.5


def test_an_erased_resident_leaves_nothing_in_the_file(tmp_path: Path) -> None:
    """secure_delete: the row of an erased resident (its id, its sealed face) is overwritten, not left in a free
    page of the gateway's card for anyone who takes the card out."""
    path = tmp_path / "gallery.db"
    g = Gallery(path, b"secret")
    v = np.random.default_rng(3).normal(size=128).astype(np.float32)
    g.enroll("res-erased-4711", [v])
    g.apply_delta(GalleryDelta(revision=2, base_revision=None, deletes=["res-erased-4711"]))
    g._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    g.close()
    assert b"res-erased-4711" not in path.read_bytes()
