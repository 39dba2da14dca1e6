"""The wire contract shared by devices, firmware and cloud: topics, envelope, bodies, codec, signing."""

from protocol.codec import check_topic, decode, encode
from protocol.envelope import ENVELOPES, Envelope, envelope, new_id, now_ms
from protocol.errors import DecodeError, ProtocolError, Reason, SignatureError, TopicError
from protocol.limits import MAX_PAYLOAD_BYTES, MAX_READINGS_PER_BATCH, SCHEMA_VERSION
from protocol.messages import BODY_BY_TYPE, LANE_PRIORITY, Body, Lane
from protocol.signing import sign_command, verify_command
from protocol.topics import Channel, Topic, parse, topic

__all__ = [
    "BODY_BY_TYPE",
    "ENVELOPES",
    "LANE_PRIORITY",
    "MAX_PAYLOAD_BYTES",
    "MAX_READINGS_PER_BATCH",
    "SCHEMA_VERSION",
    "Body",
    "Channel",
    "DecodeError",
    "Envelope",
    "Lane",
    "ProtocolError",
    "Reason",
    "SignatureError",
    "Topic",
    "TopicError",
    "check_topic",
    "decode",
    "encode",
    "envelope",
    "new_id",
    "now_ms",
    "parse",
    "sign_command",
    "topic",
    "verify_command",
]
