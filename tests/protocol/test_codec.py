"""Round trip of every message type and every rejection reason with a real bad input."""

from __future__ import annotations

import contextlib

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import BODY_BY_TYPE, DecodeError, Reason, decode, encode
from protocol.envelope import envelope
from protocol.errors import ProtocolError
from protocol.examples import EXAMPLES, example
from protocol.limits import MAX_PAYLOAD_BYTES, MAX_READINGS_PER_BATCH
from protocol.messages import Reading, TelemetryBatch


def test_every_type_has_an_example() -> None:
    assert set(EXAMPLES) == set(BODY_BY_TYPE)


@pytest.mark.parametrize("type_name", sorted(BODY_BY_TYPE))
def test_round_trip(type_name: str) -> None:
    top, env = example(type_name)
    data = encode(env)
    back = decode(data, top)
    assert back == env
    assert type(back.body) is BODY_BY_TYPE[type_name]
    assert encode(back) == data


def _raw(type_name: str = "gate.decision") -> tuple[str, dict]:  # type: ignore[type-arg]
    top, env = example(type_name)
    return top, orjson.loads(encode(env))


def _reason(payload: bytes, top: str | None = None) -> Reason:
    with pytest.raises(DecodeError) as exc:
        decode(payload, top)
    return exc.value.reason


def test_truncated_json() -> None:
    top, env = example("gate.decision")
    assert _reason(encode(env)[:-7], top) is Reason.MALFORMED_JSON


def test_not_an_object() -> None:
    assert _reason(b"[1,2,3]") is Reason.SCHEMA


def test_wrong_types() -> None:
    top, obj = _raw()
    obj["seq"] = "12"
    assert _reason(orjson.dumps(obj), top) is Reason.SCHEMA
    top, obj = _raw()
    obj["body"]["decision"] = "maybe"
    assert _reason(orjson.dumps(obj), top) is Reason.SCHEMA


def test_unknown_field_refused() -> None:
    top, obj = _raw()
    obj["body"]["door_code"] = "1234"
    assert _reason(orjson.dumps(obj), top) is Reason.SCHEMA


def test_oversized() -> None:
    top, obj = _raw()
    obj["pad"] = "x" * MAX_PAYLOAD_BYTES
    assert _reason(orjson.dumps(obj), top) is Reason.TOO_LARGE


def test_too_many_readings() -> None:
    readings = [Reading(metric="m", value=1.0, ts=1) for _ in range(MAX_READINGS_PER_BATCH)]
    assert len(encode(envelope(TelemetryBatch(readings=readings), dev="d", seq=1))) < MAX_PAYLOAD_BYTES
    top, obj = _raw("telemetry")
    obj["body"]["readings"] = [{"metric": "m", "value": 1.0, "ts": 1}] * (MAX_READINGS_PER_BATCH + 1)
    assert _reason(orjson.dumps(obj), top) is Reason.SCHEMA


def test_encode_refuses_oversized() -> None:
    from protocol.messages import MediaSnapshot

    big = [
        MediaSnapshot(ref=f"r{i}", content_type="image/jpeg", data_b64="/9j/" + "A" * 198_996, purpose="perimeter")
        for i in range(2)
    ]
    assert len(encode(envelope(big[0], dev="d", seq=1))) < MAX_PAYLOAD_BYTES
    from protocol.messages import AlarmRaise

    with pytest.raises(ValueError):
        AlarmRaise(key="k", code="c", severity="info", message="m", details={"x": "y" * 20_000})


def test_unknown_type() -> None:
    top, obj = _raw()
    obj["type"] = "gate.teleport"
    assert _reason(orjson.dumps(obj), top) is Reason.UNKNOWN_TYPE


def test_unsupported_version() -> None:
    top, obj = _raw()
    obj["v"] = 2
    assert _reason(orjson.dumps(obj), top) is Reason.UNSUPPORTED_VERSION


def test_bad_topic() -> None:
    _, env = example("gate.decision")
    assert _reason(encode(env), "ce/v1/riverside/gate-01/bogus") is Reason.BAD_TOPIC


def test_wrong_channel() -> None:
    _, env = example("gate.decision")
    assert _reason(encode(env), "ce/v1/riverside/gate-01/tele") is Reason.WRONG_CHANNEL


def test_spoofed_device() -> None:
    _, env = example("gate.decision")
    assert _reason(encode(env), "ce/v1/riverside/gate-02/evt") is Reason.SPOOFED_DEVICE


def test_command_name_must_match_topic() -> None:
    _, env = example("command")
    assert _reason(encode(env), "ce/v1/riverside/gate-01/cmd/reboot-agent") is Reason.WRONG_CHANNEL


def test_bad_ulid() -> None:
    top, obj = _raw()
    obj["id"] = "not-a-ulid"
    assert _reason(orjson.dumps(obj), top) is Reason.SCHEMA


def test_bad_embedding_size() -> None:
    top, obj = _raw("gallery.delta")
    obj["body"]["upserts"][0]["embedding_b64"] = "AAAA"
    assert _reason(orjson.dumps(obj), top) is Reason.SCHEMA


# --- fuzzing: nothing but the typed errors may escape the decoder -----------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300)
@given(st.binary(max_size=512))
def test_fuzz_bytes(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode(data)


@settings(max_examples=300)
@given(st.sampled_from(sorted(BODY_BY_TYPE)), st.text(max_size=10), json_values)
def test_fuzz_mutated_messages(type_name: str, key: str, value: object) -> None:
    top, env = example(type_name)
    obj = orjson.loads(encode(env))
    obj["body"][key or "x"] = value
    with contextlib.suppress(ProtocolError):
        decode(orjson.dumps(obj), top)


@settings(max_examples=200)
@given(json_values, st.text(max_size=40))
def test_fuzz_any_json_any_topic(value: object, top: str) -> None:
    with contextlib.suppress(ProtocolError):
        decode(orjson.dumps(value), top or None)


def test_huge_integer_and_deep_nesting_are_typed_errors() -> None:
    top, _ = example("gate.decision")
    assert _reason(b'{"v":1,"seq":' + b"9" * 40 + b"}", top) in {Reason.MALFORMED_JSON, Reason.UNKNOWN_TYPE}
    assert _reason(b"[" * 5000 + b"]" * 5000) is Reason.MALFORMED_JSON


def test_new_id_is_a_valid_ulid_with_current_time() -> None:
    from ulid import ULID

    from protocol import new_id, now_ms

    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    u = ULID.from_str(next(iter(ids)))
    assert abs(int(u.milliseconds) - now_ms()) < 5000


def test_a_refusal_quotes_a_deeply_nested_value_by_its_kind() -> None:
    """Quoting what a sender nested a thousand deep must not recurse as deep (a command handler on a gateway
    catches refusals, not RecursionError)."""
    deep = b"[" * 1000 + b"]" * 1000
    for payload, reason in (
        (b'{"v":' + deep + b',"type":"event"}', Reason.UNSUPPORTED_VERSION),
        (b'{"v":1,"type":' + deep + b"}", Reason.UNKNOWN_TYPE),
    ):
        with pytest.raises(DecodeError) as err:
            decode(payload, "ce/v1/s1/d1/evt")
        assert err.value.reason is reason and "a JSON array" in err.value.detail
