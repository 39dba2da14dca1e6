"""What a hostile device (or a broken one) publishes: the corpus the ingestion attack tests and
``civicedge chaos cloud`` mix into a valid stream. Every entry must be refused (dead-lettered with a reason, or
ignored) without stopping ingestion.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from protocol import encode, envelope, topic
from protocol.envelope import new_id
from protocol.limits import MAX_PAYLOAD_BYTES
from protocol.messages import AlarmRaise, DeviceEvent


def hostile_corpus(
    site: str, dev: str, other_site: str, other_dev: str = "gate-02", keyed: bool = False
) -> list[tuple[str, bytes]]:
    """(topic, payload) pairs from ``dev`` at ``site`` (both registered); ``other_dev`` is registered at ``site``
    too, ``other_site`` is a site ``dev`` does not belong to. ``keyed``: the cloud holds ``dev``'s own signing key
    (what is sent here in its name is unsigned or forged)."""
    evt, alm = topic(site, dev, "evt"), topic(site, dev, "alm")
    good = orjson.loads(
        encode(envelope(AlarmRaise(key="k", code="gas", severity="critical", message="m"), dev=dev, seq=1))
    )

    def doc(**kw: Any) -> bytes:
        return json.dumps({**good, "id": new_id(), **kw}).encode()  # the standard encoder writes any integer

    def typed(kind: str, body: dict[str, Any]) -> bytes:
        return doc(type=kind, body=body)

    raw = encode(envelope(DeviceEvent(code="door.note", message="MARK"), dev=dev, seq=1))
    forged = [(alm, doc()), (alm, doc(sig="A" * 86))] if keyed else []  # unsigned; a signature by no one's key
    return [
        *forged,
        (
            evt,
            typed(
                "visitor.request",
                {"request_id": new_id(), "door": "main", "unit": "no-such-flat", "expires_ts": 1_900_000_000_000},
            ),
        ),
        (evt, b"\x00\xff\xfe not json at all"),
        (evt, b""),
        (alm, raw[: len(raw) // 2]),  # truncated
        (evt, b"[" * 20_000 + b"]" * 20_000),  # deeply nested
        (evt, b'{"a":' * 5_000 + b"1" + b"}" * 5_000),
        (evt, raw.replace(b"MARK", b"\xff\xfe\xc3\x28")),  # invalid UTF-8 inside a string
        (evt, raw.replace(b"MARK", b"\\ud800")),  # a lone surrogate
        (evt, raw.replace(b"MARK", b"\\u0000")),  # NUL
        (evt, raw.replace(b"MARK", b"<script>alert(1)</script>\\u001b[2J")),  # a terminal escape in text
        (alm, raw.replace(b'"type":"event"', b'"type":"event","type":"gate.levitate"')),  # duplicate keys
        (alm, doc(seq=10**30)),  # an integer past 64 bits
        (alm, doc(ts=-1)),
        (alm, orjson.dumps(good).replace(b'"seq":1', b'"seq":NaN')),
        (alm, doc(body={**good["body"], "details": {"x": [[[[[[[[[[1]]]]]]]]]]}})),  # nested past the limit
        (alm, doc(body={**good["body"], "message": "x" * 100_000})),
        (
            evt,
            typed(
                "media.snapshot",
                {"ref": "s", "content_type": "image/jpeg", "data_b64": "abc", "purpose": "visitor_request"},
            ),
        ),
        (
            evt,
            typed(
                "media.snapshot",
                {"ref": "s", "content_type": "image/jpeg", "data_b64": "PGh0bWw+", "purpose": "perimeter"},
            ),
        ),
        (evt, typed("event", {"code": "gallery.status", "details": {"revision": 2**64}})),
        (evt, typed("event", {"code": "gallery.status", "details": {"revision": 2**63}})),
        (
            evt,
            typed(
                "event",
                {"code": "gallery.enrolled", "details": {"resident_id": "someone-else", "embedding_b64": "AAAA"}},
            ),
        ),
        (topic(site, other_dev, "alm"), doc()),  # speaks for another device
        (topic(other_site, dev, "alm"), doc()),  # from another site
        (topic(site, "gate-77", "alm"), doc(dev="gate-77")),  # not registered
        (f"ce/v1/{site}/{dev}/alm/extra", doc()),
        (f"ce/v1/{site}/{dev.upper()}/alm", doc()),
        (f"ce/v1/{site}/{dev}/cmd/open", doc()),  # device → cloud on a cloud → device channel
        (alm, orjson.dumps([1, 2, 3])),
        (alm, b"1e999999"),
        (alm, b"x" * (MAX_PAYLOAD_BYTES + 1)),  # past the protocol's limit, under the broker's
    ]
