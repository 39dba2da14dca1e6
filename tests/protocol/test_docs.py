"""Every message example in docs/protocol.md validates on its stated topic, and every type has one."""

from __future__ import annotations

import re
from pathlib import Path

from protocol import BODY_BY_TYPE, decode
from protocol.serial_frame import KIND_REQ, OP_PING, encode_frame

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
EXAMPLE = re.compile(r"Topic: `([^`]+)`\s*```json\n(.*?)```", re.S)


def test_every_doc_example_validates() -> None:
    text = DOC.read_text()
    found = EXAMPLE.findall(text)
    seen = set()
    for top, payload in found:
        env = decode(payload.encode(), top)
        seen.add(env.type)
    assert seen == set(BODY_BY_TYPE), f"types without a doc example: {set(BODY_BY_TYPE) - seen}"


def test_doc_serial_example_matches_code() -> None:
    assert encode_frame(KIND_REQ, 5, OP_PING, b"abc").hex(" ") in DOC.read_text()
