"""Typed rejection reasons shared by every decoder in the project.

Both ends count and dead-letter by ``reason``; the strings are part of the wire contract
(they appear in metrics and dead-letter rows), so add new ones, never rename.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    MALFORMED_JSON = "malformed_json"
    SCHEMA = "schema"
    TOO_LARGE = "too_large"
    UNKNOWN_TYPE = "unknown_type"
    BAD_TOPIC = "bad_topic"
    WRONG_CHANNEL = "wrong_channel"
    SPOOFED_DEVICE = "spoofed_device"
    UNSUPPORTED_VERSION = "unsupported_version"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    WRONG_DEVICE = "wrong_device"
    REPLAYED = "replayed"
    UNKNOWN_DEVICE = "unknown_device"
    REVOKED_DEVICE = "revoked_device"
    #: valid on the wire, but names something that is not the device's own (another site's resident, …)
    NOT_PERMITTED = "not_permitted"
    #: valid, permitted, and still failed while being stored (the exception's text is the detail)
    STORE_ERROR = "store_error"
    #: a document that changes what a device does (config, gallery, allow-list) arrived without a signature
    UNSIGNED = "unsigned"
    #: a signed document whose revision is not newer than the one the device already runs (a replay)
    STALE_REVISION = "stale_revision"
    #: a document or rotation that would change a pinned key other than through a signed rotation
    PINNED_KEY = "pinned_key"


class ProtocolError(ValueError):
    """An input that breaks the wire contract; ``reason`` is machine-readable, ``detail`` is for humans."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class DecodeError(ProtocolError):
    """A message that cannot be accepted as it arrived (topic, size, JSON, schema)."""


class TopicError(DecodeError):
    def __init__(self, detail: str) -> None:
        super().__init__(Reason.BAD_TOPIC, detail)


class SignatureError(ProtocolError):
    """A command that must not be executed (bad signature, expired, addressed elsewhere)."""
