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


def test_a_gateway_whose_clock_is_days_behind_is_told_to_set_its_clock() -> None:
    """Without a trustworthy time a gateway cannot tell a fresh command from a captured old one, so it refuses
    both and says why (NTP, or the floor edge.trust keeps, set it right)."""
    key = generate_key()
    pub = load_public_key(public_key_b64(key))
    fresh = sign_command(key, device="d", name="ping", ttl_ms=60_000)
    three_days_ago = now_ms() - 3 * 86_400_000
    with pytest.raises(SignatureError) as exc:
        verify_command(pub, fresh, device="d", now=three_days_ago)
    assert exc.value.reason is Reason.EXPIRED and "set its clock" in exc.value.detail


def test_key_round_trip() -> None:
    key = generate_key()
    again = load_private_key(private_key_pem(key))
    assert public_key_b64(again) == public_key_b64(key)
    with pytest.raises(ValueError):
        load_public_key("not base64!")


def test_a_document_without_a_nonce_signs_the_bytes_the_release_before_it_signed() -> None:
    """Gateways still on the release before the nonce verify over the fields they know: an unset nonce is not
    part of what is signed; a set one is (and a gateway that asked with one checks it)."""
    import orjson

    from protocol.messages import GalleryDelta
    from protocol.signing import document_bytes

    plain = GalleryDelta(revision=1000)
    before = plain.model_dump(mode="json", exclude={"sig", "nonce"}) | {"type": "gallery.delta", "dev": "gate-01"}
    assert document_bytes(plain, "gate-01") == orjson.dumps(before, option=orjson.OPT_SORT_KEYS)
    asked = GalleryDelta(revision=1000, nonce="n" * 16)
    assert b'"nonce":"nnnnnnnnnnnnnnnn"' in document_bytes(asked, "gate-01")
