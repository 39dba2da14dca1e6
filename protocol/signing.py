"""Ed25519 signatures on everything the cloud sends that changes what a device does, so whoever controls the
broker still cannot open a door, re-key a gateway or roll its code back.

Three keys, each with one job (a device pins the three public keys at provisioning, see ``edge.trust``):

- the **command key** signs commands: the canonical encoding of ``{"args", "deadline", "dev", "id", "name"}``
  (JSON, keys sorted at every level, no whitespace, UTF-8: orjson ``OPT_SORT_KEYS``), carried base64url
  without padding in ``Command.sig``;
- the **document key** signs documents (desired config, gallery and allow-list deltas): the canonical encoding
  of the body without ``sig``, with its ``type`` and the device it is for (``dev``), so a document signed for one
  gate is refused by another (``wrong_device``) and one type cannot pass for another; every document carries a
  revision the device keeps and never goes back on (``stale_revision``);
- the **update key** signs update bundles (``protocol.updates``); it can live offline.

The other way, a gateway signs what it says with **its own key** (made at provisioning, the private half never
leaves the device, the public half registered with the cloud over HTTPS): every message but telemetry readings
(:func:`signs`) carries ``sig`` in its envelope, over the canonical encoding of ``{"body", "dev", "id", "ts",
"type"}`` (:func:`uplink_bytes`; ``seq`` is left out, it is assigned when the message is committed). The cloud
refuses an unsigned or forged one from a device whose key it holds, so whoever holds the broker cannot enrol a
face, answer for a gate, fake an acknowledgement or an update's progress in a gateway's name.

A pinned key changes only through a rotation: the new public key, signed by the current key of the same role
(:func:`sign_rotation`), carried by a signed ``rotate-key`` command.
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

from protocol.envelope import Envelope, new_id, now_ms
from protocol.errors import Reason, SignatureError
from protocol.limits import MAX_COMMAND_TTL_MS
from protocol.messages import Body, Command, Lane

#: the keys a device pins, by job
KEY_ROLES = ("commands", "documents", "updates")


def canonical(
    *, cid: str, device: str, name: str, args: dict[str, Any], deadline_ms: int, issued_ms: int | None = None
) -> bytes:
    doc: dict[str, Any] = {"args": args, "deadline": deadline_ms, "dev": device, "id": cid, "name": name}
    if issued_ms is not None:  # the cloud's clock when it signed: a device without a clock learns time from it
        doc["issued"] = issued_ms
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
    """An Ed25519 private key from PEM (PKCS#8); a ValueError that says what the text is instead."""
    data = Path(pem).read_bytes() if isinstance(pem, Path) else pem.encode() if isinstance(pem, str) else pem
    if b"PUBLIC KEY-----" in data:
        raise ValueError("this is a public key; a private key is needed here (the file keygen wrote, 0600)")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        try:
            load_public_key(data.decode(errors="replace"))
        except ValueError:
            raise ValueError("not a private key in PEM form (-----BEGIN PRIVATE KEY-----)") from None
        raise ValueError("this is a public key (base64); a private key is needed here") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"not an Ed25519 private key (it is {type(key).__name__.removeprefix('_')})")
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
    issued = now_ms()
    deadline = deadline_ms if deadline_ms is not None else issued + ttl_ms
    issued = min(issued, deadline)
    sig = key.sign(canonical(cid=cid, device=device, name=name, args=args, deadline_ms=deadline, issued_ms=issued))
    return Command(cid=cid, name=name, args=args, deadline_ms=deadline, issued_ms=issued, sig=_b64(sig))


def verify_command(pub: Ed25519PublicKey, cmd: Command, *, device: str, now: int | None = None) -> None:
    """Raise :class:`SignatureError` unless ``cmd`` is signed for ``device`` and still valid at ``now``."""
    try:
        sig = _unb64(cmd.sig)
        pub.verify(
            sig,
            canonical(
                cid=cmd.cid,
                device=device,
                name=cmd.name,
                args=cmd.args,
                deadline_ms=cmd.deadline_ms,
                issued_ms=cmd.issued_ms,
            ),
        )
    except (InvalidSignature, binascii.Error, ValueError):
        raise SignatureError(
            Reason.BAD_SIGNATURE, f"command {cmd.cid} is not signed by the cloud for {device}"
        ) from None
    t = now_ms() if now is None else now
    if cmd.deadline_ms < t:
        raise SignatureError(Reason.EXPIRED, f"command {cmd.cid} expired {t - cmd.deadline_ms} ms ago")
    # Judged against the device's own clock (raised by edge.trust to what signed commands proved), never against
    # the command's issue time alone: a gateway that lost its database and boots with a stale clock would
    # otherwise take any old captured command whose deadline is past its clock.
    if cmd.deadline_ms > t + MAX_COMMAND_TTL_MS:
        behind = (
            f" (signed {(cmd.issued_ms - t) // 3_600_000} h ahead of this device's clock: set its clock)"
            if (cmd.issued_ms is not None and cmd.issued_ms > t + 3_600_000)
            else ""
        )
        raise SignatureError(Reason.EXPIRED, f"command {cmd.cid} deadline is more than 24 h ahead{behind}")


def document_bytes(body: Body, device: str) -> bytes:
    """What a document's signature covers: its fields but ``sig``, its type and the device it is addressed to."""
    # a field added later is signed only when set, so a gateway on the release before it still verifies the bytes
    added_later = {f for f in ("nonce",) if getattr(body, f, None) is None}
    doc = body.model_dump(mode="json", exclude={"sig", *added_later})
    doc["type"], doc["dev"] = body.TYPE, device
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def sign_document(key: Ed25519PrivateKey, body: Body, device: str) -> Body:
    """A copy of ``body`` (config, gallery or allow-list delta) signed for ``device``."""
    return body.model_copy(update={"sig": _b64(key.sign(document_bytes(body, device)))})


def verify_document(pub: Ed25519PublicKey | None, body: Body, device: str) -> None:
    """Raise :class:`SignatureError` (``unsigned``, ``wrong_device`` or ``bad_signature``) unless ``body`` is
    signed by the document key for ``device``."""
    sig = getattr(body, "sig", None)
    if not sig:
        raise SignatureError(Reason.UNSIGNED, f"{body.TYPE} without a signature")
    if pub is None:
        raise SignatureError(Reason.BAD_SIGNATURE, "no document key pinned on this device")
    try:
        raw = _unb64(sig)
    except (binascii.Error, ValueError):
        raise SignatureError(Reason.BAD_SIGNATURE, f"{body.TYPE}: unreadable signature") from None
    try:
        pub.verify(raw, document_bytes(body, device))
    except InvalidSignature:  # forged, altered, or signed for another device (a copy from another gate's topic)
        raise SignatureError(
            Reason.BAD_SIGNATURE, f"{body.TYPE} is not signed by the document key for {device}"
        ) from None


def rotation_bytes(*, device: str, role: str, public_key: str) -> bytes:
    return orjson.dumps(
        {"dev": device, "public_key": public_key, "purpose": "key-rotation", "role": role}, option=orjson.OPT_SORT_KEYS
    )


def sign_rotation(current: Ed25519PrivateKey, *, device: str, role: str, new_public_key: str) -> str:
    """The endorsement of a new key for ``role`` on ``device`` by the key it replaces (base64url)."""
    if role not in KEY_ROLES:
        raise ValueError(f"unknown key role {role!r} (one of {', '.join(KEY_ROLES)})")
    load_public_key(new_public_key)
    return _b64(current.sign(rotation_bytes(device=device, role=role, public_key=new_public_key)))


def verify_rotation(
    current: Ed25519PublicKey, endorsement: str, *, device: str, role: str, new_public_key: str
) -> None:
    try:
        current.verify(_unb64(endorsement), rotation_bytes(device=device, role=role, public_key=new_public_key))
    except (InvalidSignature, binascii.Error, ValueError):
        raise SignatureError(
            Reason.BAD_SIGNATURE, f"the new {role} key is not endorsed by the current {role} key for {device}"
        ) from None


# --- what devices say: signed by the device's own key ---------------------------------------------------


def signs(body: Body | type[Body]) -> bool:
    """Whether a device with its own key signs this kind of message: everything but telemetry readings (the
    high-rate lane; a forged reading can fire a rule, never open a door or change a record)."""
    return body.LANE is not Lane.TELEMETRY


def uplink_bytes(*, msg_id: str, device: str, ts: int, body: Body) -> bytes:
    """What a device's signature covers: the message id, the device, its clock, the type and the body."""
    body_fields = body.model_dump(mode="json", exclude_none=True)
    doc = {"body": body_fields, "dev": device, "id": msg_id, "ts": ts, "type": body.TYPE}
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def sign_uplink(key: Ed25519PrivateKey, *, msg_id: str, device: str, ts: int, body: Body) -> str:
    return _b64(key.sign(uplink_bytes(msg_id=msg_id, device=device, ts=ts, body=body)))


def signed(key: Ed25519PrivateKey | None, env: Envelope) -> Envelope:
    """``env`` signed by the device key ``key`` (unchanged without a key or for a reading)."""
    if key is None or not signs(env.body):
        return env
    return env.model_copy(update={"sig": sign_uplink(key, msg_id=env.id, device=env.dev, ts=env.ts, body=env.body)})


def verify_uplink(pub: Ed25519PublicKey, env: Envelope) -> None:
    """Raise :class:`SignatureError` (``unsigned`` or ``bad_signature``) unless ``env`` is signed by ``pub``."""
    if not env.sig:
        raise SignatureError(Reason.UNSIGNED, f"{env.type} from {env.dev} without the device's signature")
    try:
        pub.verify(_unb64(env.sig), uplink_bytes(msg_id=env.id, device=env.dev, ts=env.ts, body=env.body))
    except (InvalidSignature, binascii.Error, ValueError):
        raise SignatureError(Reason.BAD_SIGNATURE, f"{env.type} is not signed by the key of {env.dev}") from None
