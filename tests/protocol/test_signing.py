from __future__ import annotations

import pytest

from protocol import Reason, SignatureError, now_ms, sign_command, verify_command
from protocol.signing import generate_key, load_private_key, load_public_key, private_key_pem, public_key_b64


def test_sign_and_verify() -> None:
    key = generate_key()
    pub = load_public_key(public_key_b64(key))
    cmd = sign_command(key, device="gate-01", name="open-door", args={"door": "a1", "s": 3})
    verify_command(pub, cmd, device="gate-01")


def _refusal(fn) -> Reason:  # type: ignore[no-untyped-def]
    with pytest.raises(SignatureError) as exc:
        fn()
    return exc.value.reason


def test_tampered_args_wrong_device_wrong_key() -> None:
    key = generate_key()
    pub = load_public_key(public_key_b64(key))
    cmd = sign_command(key, device="gate-01", name="open-door", args={"door": "a1"})
    tampered = cmd.model_copy(update={"args": {"door": "b2"}})
    assert _refusal(lambda: verify_command(pub, tampered, device="gate-01")) is Reason.BAD_SIGNATURE
    assert _refusal(lambda: verify_command(pub, cmd, device="gate-02")) is Reason.BAD_SIGNATURE
    other = load_public_key(public_key_b64(generate_key()))
    assert _refusal(lambda: verify_command(other, cmd, device="gate-01")) is Reason.BAD_SIGNATURE
    garbage = cmd.model_copy(update={"sig": "!!!"})
    assert _refusal(lambda: verify_command(pub, garbage, device="gate-01")) is Reason.BAD_SIGNATURE


def test_expired_and_too_far_ahead() -> None:
    key = generate_key()
    pub = load_public_key(public_key_b64(key))
    old = sign_command(key, device="d", name="ping", deadline_ms=now_ms() - 1)
    assert _refusal(lambda: verify_command(pub, old, device="d")) is Reason.EXPIRED
    far = sign_command(key, device="d", name="ping", deadline_ms=now_ms() + 48 * 3600_000)
    assert _refusal(lambda: verify_command(pub, far, device="d")) is Reason.EXPIRED


def test_a_gateway_whose_clock_is_days_behind_takes_a_fresh_command() -> None:
    """No real-time clock and no NTP yet: the command's own signed issue time bounds its lifetime."""
    key = generate_key()
    pub = load_public_key(public_key_b64(key))
    cmd = sign_command(key, device="d", name="ping", ttl_ms=60_000)
    three_days_ago = now_ms() - 3 * 86_400_000
    verify_command(pub, cmd, device="d", now=three_days_ago)
    # the learned time then holds: its own remembered floor (edge.trust) moves the device's clock forward


def test_key_round_trip() -> None:
    key = generate_key()
    again = load_private_key(private_key_pem(key))
    assert public_key_b64(again) == public_key_b64(key)
    with pytest.raises(ValueError):
        load_public_key("not base64!")
