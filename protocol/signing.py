"""Ed25519 signing of commands, so a compromised broker cannot open a door.

The signature covers the canonical encoding of ``{"args", "deadline", "dev", "id", "name"}``: JSON, keys
sorted at every level, no whitespace, UTF-8 (orjson ``OPT_SORT_KEYS``). It is carried base64url without
padding in ``Command.sig``. The cloud holds the private key; every device holds the public key (raw 32
bytes, base64) and refuses unsigned, late, replayed or mis-addressed commands.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.envelope import new_id, now_ms
from protocol.errors import Reason, SignatureError
from protocol.limits import MAX_COMMAND_TTL_MS
from protocol.messages import Command


def canonical(*, cid: str, device: str, name: str, args: dict[str, Any], deadline_ms: int) -> bytes:
    doc = {"args": args, "deadline": deadline_ms, "dev": device, "id": cid, "name": name}
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private_key(pem: bytes | str | Path) -> Ed25519PrivateKey:
    data = Path(pem).read_bytes() if isinstance(pem, Path) else pem.encode() if isinstance(pem, str) else pem
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the command-signing key must be an Ed25519 private key (PEM, PKCS#8)")
    return key


def public_key_b64(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    """The public key as devices store it: 32 raw bytes, standard base64."""
    pub = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return base64.b64encode(pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()


def load_public_key(b64: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(b64.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not a base64 Ed25519 public key (32 raw bytes): {exc}") from None


def sign_command(
    key: Ed25519PrivateKey,
    *,
    device: str,
    name: str,
    args: dict[str, Any] | None = None,
    ttl_ms: int = 60_000,
    deadline_ms: int | None = None,
    cid: str | None = None,
) -> Command:
    """Build a signed :class:`Command` for ``device`` that expires at ``deadline_ms`` (default now + ttl)."""
    args = dict(args or {})
    cid = cid or new_id()
    deadline = deadline_ms if deadline_ms is not None else now_ms() + ttl_ms
    sig = key.sign(canonical(cid=cid, device=device, name=name, args=args, deadline_ms=deadline))
    return Command(cid=cid, name=name, args=args, deadline_ms=deadline, sig=_b64(sig))


def verify_command(pub: Ed25519PublicKey, cmd: Command, *, device: str, now: int | None = None) -> None:
    """Raise :class:`SignatureError` unless ``cmd`` is signed for ``device`` and still valid at ``now``."""
    try:
        sig = _unb64(cmd.sig)
        pub.verify(
            sig,
            canonical(cid=cmd.cid, device=device, name=cmd.name, args=cmd.args, deadline_ms=cmd.deadline_ms),
        )
    except (InvalidSignature, binascii.Error, ValueError):
        raise SignatureError(
            Reason.BAD_SIGNATURE, f"command {cmd.cid} is not signed by the cloud for {device}"
        ) from None
    t = now_ms() if now is None else now
    if cmd.deadline_ms < t:
        raise SignatureError(Reason.EXPIRED, f"command {cmd.cid} expired {t - cmd.deadline_ms} ms ago")
    if cmd.deadline_ms > t + MAX_COMMAND_TTL_MS:
        raise SignatureError(Reason.EXPIRED, f"command {cmd.cid} deadline is more than 24 h ahead")
