"""Signed update bundles, shared by the cloud (builds, checks, serves) and devices (verify before installing).

A bundle is a gzip'd tar holding ``manifest.json``, ``manifest.sig`` and ``files/…``. The manifest names the
target kind (``gateway`` for the agent, an app name for MicroPython boards), the version, the lowest version it
may be installed over, when it expires, whether it is a deliberate downgrade, and the sha256 of every file. The
signature is Ed25519 over the manifest's canonical JSON (sorted keys, no spaces), by the update key, which can
live offline (``civicedge cloud bundle --key FILE``). A device refuses a bundle whose signature, file hashes,
kind, minimum version or expiry do not fit, and one that is not newer than what it runs unless the bundle
itself says it is a downgrade (anti-rollback: an older signed bundle replayed by whoever holds the broker does
nothing), naming the reason.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import time
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocol.signing import _b64, _unb64

MAX_BUNDLE_BYTES = 64 * 2**20
#: a dotted version with an optional suffix (``1.4.0``, ``1.4.0-rc1``, ``1.4.0+build.7``): it names files and URLs
VERSION_PATTERN = r"^\d+(\.\d+){0,3}([.+-][0-9A-Za-z.]+)?$"
_VERSION = re.compile(VERSION_PATTERN)
#: how long a bundle stays installable unless its builder says otherwise
DEFAULT_VALID_DAYS = 180


class BundleError(ValueError):
    """A bundle that must not be installed; ``reason`` is machine-readable."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    kind: str = Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=32)
    version: str = Field(max_length=40, pattern=VERSION_PATTERN)  # it names files and URLs: no "/" or ".." tricks
    min_version: str | None = Field(
        default=None, max_length=40, pattern=VERSION_PATTERN, description="installs only over this or newer"
    )
    files: dict[str, str] = Field(description="path → sha256 hex")
    created_ts: int
    expires_ts: int = Field(description="ms since the epoch after which no device installs it")
    downgrade: bool = Field(default=False, description="may install over a newer version (a deliberate roll-back)")
    notes: str = Field(default="", max_length=2000)


def version_key(v: str) -> tuple[int, ...]:
    """Compare dotted versions numerically (``0.10.0`` > ``0.9.3``); anything after the numbers is ignored."""
    if not _VERSION.match(v):
        raise BundleError("bad_version", f"{v!r} is not a dotted version")
    return tuple(int(x) for x in re.match(r"^[\d.]+", v).group(0).strip(".").split("."))  # type: ignore[union-attr]


def canonical(manifest: Manifest) -> bytes:
    return orjson.dumps(manifest.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)


def build_bundle(
    src: Path,
    *,
    kind: str,
    version: str,
    key: Ed25519PrivateKey,
    min_version: str | None = None,
    notes: str = "",
    valid_days: float = DEFAULT_VALID_DAYS,
    downgrade: bool = False,
) -> bytes:
    """Every file under ``src`` (relative paths kept), signed; installable for ``valid_days``."""
    version_key(version)
    if min_version:
        version_key(min_version)
    files = {str(p.relative_to(src)): p for p in sorted(src.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}
    if not files:
        raise BundleError("empty", f"no files under {src}")
    manifest = Manifest(
        kind=kind,
        version=version,
        min_version=min_version,
        files={name: hashlib.sha256(p.read_bytes()).hexdigest() for name, p in files.items()},
        created_ts=int(time.time() * 1000),
        expires_ts=int((time.time() + valid_days * 86_400) * 1000),
        downgrade=downgrade,
        notes=notes,
    )
    body = canonical(manifest)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, manifest.created_ts // 1000
            tar.addfile(info, io.BytesIO(data))

        add("manifest.json", body)
        add("manifest.sig", _b64(key.sign(body)).encode())
        for name, p in files.items():
            add(f"files/{name}", p.read_bytes())
    return buf.getvalue()


def read_manifest(data: bytes) -> tuple[Manifest, bytes, bytes]:
    """(manifest, its bytes, signature) without checking anything else."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError("too_large", f"{len(data)} bytes (at most {MAX_BUNDLE_BYTES})")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            body = _member(tar, "manifest.json")
            sig = _member(tar, "manifest.sig")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleError("malformed", f"not a bundle (gzip'd tar): {exc}") from None
    try:
        return Manifest.model_validate_json(body), body, sig
    except ValidationError as exc:
        raise BundleError("malformed", f"manifest: {exc.errors()[0]['msg']}") from None


def _member(tar: tarfile.TarFile, name: str) -> bytes:
    try:
        f = tar.extractfile(name)
    except KeyError:
        raise BundleError("malformed", f"no {name} in the bundle") from None
    if f is None:
        raise BundleError("malformed", f"{name} is not a file")
    return f.read()


def open_bundle(
    data: bytes,
    public_key: Ed25519PublicKey,
    *,
    kind: str | None = None,
    installed: str | None = None,
    now_ms: int | None = None,
) -> tuple[Manifest, dict[str, bytes]]:
    """Check a bundle completely (signature, every file's hash, nothing extra, kind, minimum version; with
    ``installed``, that it is newer or a signed downgrade; with ``now_ms``, that it has not expired) and return its
    manifest and files."""
    manifest, body, sig = read_manifest(data)
    try:
        public_key.verify(_unb64(sig.decode().strip()), body)
    except (InvalidSignature, ValueError):
        raise BundleError("bad_signature", "the manifest is not signed by the update key") from None
    if kind is not None and manifest.kind != kind:
        raise BundleError("wrong_kind", f"the bundle is for {manifest.kind}, this device is {kind}")
    if installed is not None and manifest.min_version and version_key(installed) < version_key(manifest.min_version):
        raise BundleError("too_old", f"needs {manifest.min_version} or newer installed, this device has {installed}")
    if (
        installed is not None
        and not manifest.downgrade
        and version_key(manifest.version) <= version_key(installed)
        and manifest.version != installed
    ):
        raise BundleError(
            "rollback", f"{manifest.version} is not newer than {installed} (and the bundle is not a signed downgrade)"
        )
    if now_ms is not None and now_ms > manifest.expires_ts:
        raise BundleError("expired", f"the bundle expired {(now_ms - manifest.expires_ts) // 86_400_000} day(s) ago")
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for m in tar.getmembers():
            if not m.name.startswith("files/"):
                continue
            name = m.name[len("files/") :]
            if name not in manifest.files or not m.isfile() or ".." in Path(name).parts or name.startswith("/"):
                raise BundleError("unexpected_file", f"{m.name} is not in the manifest")
            files[name] = _member(tar, m.name)
    for name, digest in manifest.files.items():
        if name not in files:
            raise BundleError("missing_file", f"{name} is in the manifest but not in the bundle")
        if hashlib.sha256(files[name]).hexdigest() != digest:
            raise BundleError("bad_hash", f"{name} does not match its hash")
    return manifest, files


def describe(manifest: Manifest) -> dict[str, Any]:
    return {**manifest.model_dump(mode="json"), "files": len(manifest.files)}
