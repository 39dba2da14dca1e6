"""JSON codec with hard limits. Every failure is a :class:`DecodeError` carrying a :class:`Reason`."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from protocol.envelope import ENVELOPE_ADAPTER, ENVELOPES, Envelope
from protocol.errors import DecodeError, ProtocolError, Reason
from protocol.limits import MAX_PAYLOAD_BYTES, SCHEMA_VERSION
from protocol.messages import Command
from protocol.topics import Channel, Topic, parse


def encode(env: Envelope) -> bytes:
    """Serialise an envelope; refuse one that would break the size limit."""
    data = orjson.dumps(env.model_dump(mode="json", exclude_none=True))
    if len(data) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(Reason.TOO_LARGE, f"{len(data)} bytes > limit {MAX_PAYLOAD_BYTES}")
    return data


def _summarise(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:3]:
        loc = ".".join(str(p) for p in e["loc"][1:] or e["loc"])
        parts.append(f"{loc}: {e['msg']}")
    more = err.error_count() - len(parts)
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def _parse(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(Reason.MALFORMED_JSON, str(exc)[:200]) from None


def _shown(value: Any) -> str:
    """A value a device sent, quoted in a refusal: short, and a nested one by its kind (its repr could recurse
    as deep as the device nested it)."""
    if isinstance(value, dict | list):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    return repr(value)[:64]


def _refusal(raw: bytes, exc: Exception) -> DecodeError:
    """Why the validator refused ``raw``: not JSON, not an object, another schema version, an unknown message
    type, or (the message type known) the schema itself."""
    obj = _parse(raw)
    if not isinstance(obj, dict):
        return DecodeError(Reason.SCHEMA, f"payload is a JSON {type(obj).__name__}, not an object")
    if obj.get("v") != SCHEMA_VERSION:
        return DecodeError(Reason.UNSUPPORTED_VERSION, f"schema version {_shown(obj.get('v'))}, expected 1")
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in ENVELOPES:
        return DecodeError(Reason.UNKNOWN_TYPE, f"unknown message type {_shown(kind)}")
    if isinstance(exc, ValidationError):
        return DecodeError(Reason.SCHEMA, f"{kind}: {_summarise(exc)}")
    # a validator met what it did not expect
    return DecodeError(Reason.SCHEMA, f"{kind}: {type(exc).__name__}: {exc}"[:300])


def decode(payload: bytes | bytearray | memoryview | str, topic: str | Topic | None = None) -> Envelope:
    """Decode and validate one message.

    With ``topic``, also check that the topic is ours, that the message type may travel on its channel and
    that the payload's ``dev`` is the device in the topic (a device may not speak for another).
    """
    raw = payload.encode() if isinstance(payload, str) else bytes(payload)
    top = topic if isinstance(topic, Topic) or topic is None else parse(topic)
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise DecodeError(Reason.TOO_LARGE, f"{len(raw)} bytes > limit {MAX_PAYLOAD_BYTES}")
    # validated straight from the bytes (parsing the JSON apart first cost a third of the time); only a refused
    # message is parsed again, to say why it was refused
    try:
        env = ENVELOPE_ADAPTER.validate_json(raw)
    except (ValidationError, ValueError, TypeError, RecursionError, OverflowError) as exc:
        raise _refusal(raw, exc) from None
    if b"NaN" in raw or b"Infinity" in raw:  # literals the validator's parser takes and JSON does not
        _parse(raw)
    if top is not None:
        check_topic(env, top)
    return env


def check_topic(env: Envelope, top: Topic) -> None:
    """Raise unless ``env`` may arrive on ``top``."""
    if top.channel not in env.body.CHANNELS:
        allowed = ", ".join(sorted(c.value for c in env.body.CHANNELS))
        raise DecodeError(Reason.WRONG_CHANNEL, f"{env.type} travels on {allowed}, not {top.channel.value}")
    if env.dev != top.device:
        raise DecodeError(Reason.SPOOFED_DEVICE, f"payload dev {env.dev!r} ≠ topic device {top.device!r}")
    if top.channel is Channel.CMD and isinstance(env.body, Command) and env.body.name != top.name:
        raise DecodeError(Reason.WRONG_CHANNEL, f"command {env.body.name!r} sent on cmd/{top.name}")
