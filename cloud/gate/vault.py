"""Face embeddings at rest: sealed with AES-256-GCM under a key kept in a file (``CE_FACE_KEY_FILE``), bound to
the resident they belong to, so a database dump or backup holds no usable face data and a row moved to another
resident does not open.

A sealed embedding is ``b"CEF1" + key id (8 bytes) + nonce (12) + ciphertext and tag``; the key id (the first 8
bytes of the key's SHA-256) names the key that sealed it. Rotation (``civicedge cloud rotate-face-key``) writes a
new key, keeps the old one beside it as ``<file>.previous`` while every row is re-sealed in one transaction, then
removes it. Rows stored before sealing existed (plain 512-byte embeddings) are still read, and sealed by the next
rotation.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, select, update

from cloud.gate import tables as g

MAGIC = b"CEF1"
PLAIN_SIZE = 128 * 4  # an embedding stored before sealing


class VaultError(ValueError):
    pass


def _key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:8]


def _read_key(path: Path) -> bytes:
    data = path.read_bytes()
    if len(data) != 32:
        raise VaultError(f"{path} is not a face key (32 bytes); restore it from the backup of the cloud's keys")
    return data


def _write_key(path: Path, key: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class FaceVault:
    def __init__(self, path: Path) -> None:
        """The key at ``path`` (created, mode 0600, on first use); ``<path>.previous`` too, during a rotation."""
        self.path = path
        if not path.exists():
            _write_key(path, secrets.token_bytes(32))
        self.key = _read_key(path)
        self.keys = {_key_id(self.key): self.key}
        previous = path.with_name(path.name + ".previous")
        if previous.exists():
            old = _read_key(previous)
            self.keys[_key_id(old)] = old

    def seal(self, raw: bytes, resident_id: str) -> bytes:
        nonce = secrets.token_bytes(12)
        return MAGIC + _key_id(self.key) + nonce + AESGCM(self.key).encrypt(nonce, raw, resident_id.encode())

    def open(self, blob: bytes, resident_id: str) -> bytes:
        if not blob.startswith(MAGIC):
            if len(blob) == PLAIN_SIZE:
                return bytes(blob)  # stored before sealing: sealed at the next rotation
            raise VaultError("not a sealed embedding")
        kid, nonce, ct = blob[4:12], blob[12:24], blob[24:]
        key = self.keys.get(bytes(kid))
        if key is None:
            raise VaultError("sealed with a key this cloud does not have (a lost or foreign CE_FACE_KEY_FILE)")
        try:
            return AESGCM(key).decrypt(nonce, ct, resident_id.encode())
        except InvalidTag:
            raise VaultError(f"the embedding does not open for resident {resident_id}") from None

    def rotate(self, engine: Engine) -> int:
        """A new key; every embedding re-sealed with it (one transaction); the old key removed. Returns rows."""
        previous = self.path.with_name(self.path.name + ".previous")
        _write_key(previous, self.key)  # a crash from here on still opens everything
        old = FaceVault(self.path)
        new_key = secrets.token_bytes(32)
        new = FaceVault.__new__(FaceVault)
        new.path, new.key, new.keys = self.path, new_key, {_key_id(new_key): new_key}
        n = 0
        with engine.begin() as conn:
            c = g.resident_faces.c
            for row in conn.execute(select(c.id, c.resident_id, c.embedding)).all():
                raw = old.open(row.embedding, row.resident_id)
                conn.execute(
                    update(g.resident_faces).where(c.id == row.id).values(embedding=new.seal(raw, row.resident_id))
                )
                n += 1
            _write_key(self.path, new_key)  # before the commit: a failed write rolls the rows back
        previous.unlink(missing_ok=True)
        self.key, self.keys = new_key, {_key_id(new_key): new_key}
        return n
