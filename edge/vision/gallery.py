"""Residents' face embeddings: 1:N search as one matrix product, threshold plus a margin over the second-best
identity, persisted in SQLite encrypted at rest (AES-GCM, key derived from the device secret). No face images
are stored."""

from __future__ import annotations

import base64
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edge.inference import trim_heap
from edge.store import open_sqlite
from protocol.limits import EMBEDDING_DIM
from protocol.messages import GalleryDelta

F32 = npt.NDArray[np.float32]


class GalleryLocked(RuntimeError):
    """The stored gallery cannot be decrypted with this device secret."""


def derive_key(device_secret: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"civicedge", info=b"gallery v1").derive(device_secret)


@dataclass(frozen=True, slots=True)
class Match:
    resident_id: str | None  # None: no decision for a resident
    score: float
    second: float  # best score of any other identity
    reason: str  # match / below_threshold / ambiguous / empty


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """One consistent view of the gallery, swapped in whole: a search never sees half a reload."""

    ids: list[str]
    names: list[str]
    starts: npt.NDArray[np.intp]
    matrix: F32
    units: dict[str, str | None]


_EMPTY = _Snapshot([], [], np.zeros(0, dtype=np.intp), np.zeros((0, EMBEDDING_DIM), np.float32), {})


class Gallery:
    def __init__(self, path: Path, device_secret: bytes, threshold: float = 0.363, margin: float = 0.08) -> None:
        self.path = path
        self.threshold = threshold
        self.margin = margin
        self._aead = AESGCM(derive_key(device_secret))
        self._lock = threading.Lock()
        self._db = open_sqlite(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS gallery (resident_id TEXT PRIMARY KEY, unit TEXT, "
            "nonce BLOB NOT NULL, blob BLOB NOT NULL)"
        )
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        self._snap = _EMPTY
        self._load()

    def close(self) -> None:
        self._db.close()

    @property
    def revision(self) -> int:
        with self._lock:  # one connection, used from the loop and from worker threads
            row = self._db.execute("SELECT value FROM meta WHERE key = 'revision'").fetchone()
        return int(row[0]) if row else 0

    @property
    def residents(self) -> list[str]:
        return list(self._snap.names)

    def __len__(self) -> int:
        return len(self._snap.units)

    def _load(self) -> None:
        ids: list[str] = []
        rows: list[F32] = []
        units: dict[str, str | None] = {}
        for rid, unit, nonce, blob in self._db.execute("SELECT resident_id, unit, nonce, blob FROM gallery"):
            try:
                raw = self._aead.decrypt(nonce, blob, rid.encode())
            except InvalidTag:
                raise GalleryLocked(f"{self.path}: the gallery was written with another device secret") from None
            embs = np.frombuffer(raw, dtype="<f4").reshape(-1, EMBEDDING_DIM)
            rows.append(embs)
            ids.extend([rid] * len(embs))
            units[rid] = unit
        starts = [k for k in range(len(ids)) if k == 0 or ids[k] != ids[k - 1]]  # one resident's rows are contiguous
        matrix = np.vstack(rows).astype(np.float32) if rows else np.zeros((0, EMBEDDING_DIM), np.float32)
        self._snap = _Snapshot(ids, [ids[k] for k in starts], np.array(starts, dtype=np.intp), matrix, units)
        trim_heap()

    def _row(
        self, resident_id: str, embeddings: list[F32] | F32, unit: str | None
    ) -> tuple[str, str | None, bytes, bytes]:
        """A resident's embeddings, L2-normalised and sealed (AES-GCM, fresh nonce, the id as associated data)."""
        embs = np.asarray(embeddings, dtype=np.float32).reshape(-1, EMBEDDING_DIM)
        embs = embs / np.maximum(np.linalg.norm(embs, axis=1, keepdims=True), 1e-12)
        nonce = os.urandom(12)
        return resident_id, unit, nonce, self._aead.encrypt(nonce, embs.astype("<f4").tobytes(), resident_id.encode())

    def enroll(self, resident_id: str, embeddings: list[F32] | F32, unit: str | None = None) -> None:
        """Store (replacing) a resident's embeddings, several per person is best (lighting, glasses)."""
        self.enroll_many([(resident_id, np.asarray(embeddings, dtype=np.float32), unit)])

    def enroll_many(self, items: list[tuple[str, F32, str | None]]) -> None:
        """Store (replacing) many residents in one transaction: (resident id, embeddings (k, 128), unit)."""
        rows = [self._row(rid, embs, unit) for rid, embs, unit in items]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO gallery VALUES (?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._load()

    def embeddings(self, resident_id: str) -> list[F32]:
        """A resident's stored embeddings (empty if not enrolled)."""
        with self._lock:
            snap = self._snap
            return [snap.matrix[i].copy() for i, r in enumerate(snap.ids) if r == resident_id]

    def remove(self, resident_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM gallery WHERE resident_id = ?", (resident_id,))
            self._load()

    def apply_delta(self, delta: GalleryDelta) -> None:
        """Apply a cloud gallery delta (``base_revision`` None: a full snapshot)."""
        grouped: dict[str, tuple[str | None, list[F32]]] = {}
        for e in delta.upserts:
            vec = np.frombuffer(base64.b64decode(e.embedding_b64), dtype="<f4")
            grouped.setdefault(e.resident_id, (e.unit, []))[1].append(vec)
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if delta.base_revision is None:
                    self._db.execute("DELETE FROM gallery")
                for rid in delta.deletes:
                    self._db.execute("DELETE FROM gallery WHERE resident_id = ?", (rid,))
                self._db.executemany(
                    "INSERT OR REPLACE INTO gallery VALUES (?, ?, ?, ?)",
                    [self._row(rid, np.vstack(vecs), unit) for rid, (unit, vecs) in grouped.items()],
                )
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('revision', ?)", (str(delta.revision),))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._load()

    def search(self, emb: F32) -> Match:
        """Best identity by cosine similarity: one matrix product, then the best per identity (rows of one
        resident are contiguous) and the top two; threshold and margin decide."""
        snap = self._snap  # one consistent view, whatever a delta does meanwhile
        if not len(snap.ids):
            return Match(None, 0.0, 0.0, "empty")
        scores = snap.matrix @ emb.astype(np.float32)
        per_id = np.maximum.reduceat(scores, snap.starts)
        if len(per_id) > 1:
            top2 = np.argpartition(-per_id, 1)[:2]
            i, j = (top2 if per_id[top2[0]] >= per_id[top2[1]] else top2[::-1]).tolist()
            top, second = float(per_id[i]), float(per_id[j])
        else:
            i, top, second = 0, float(per_id[0]), -1.0
        if top < self.threshold:
            return Match(None, top, second, "below_threshold")
        if top - second < self.margin:
            return Match(None, top, second, "ambiguous")
        return Match(snap.names[i], top, second, "match")
