"""Hard limits of the wire contract. Firmware gets the same numbers through the JSON Schemas."""

from __future__ import annotations

from typing import Final

SCHEMA_VERSION: Final = 1
MAX_PAYLOAD_BYTES: Final = 256 * 1024
MAX_READINGS_PER_BATCH: Final = 1000
MAX_ID_LEN: Final = 64
MAX_NAME_LEN: Final = 64
MAX_TEXT_LEN: Final = 1024
MAX_ARGS_BYTES: Final = 16 * 1024
MAX_GALLERY_ENTRIES: Final = 500
EMBEDDING_DIM: Final = 128
#: Commands further in the future than this are refused too (a stolen key cannot mint long-lived ones).
MAX_COMMAND_TTL_MS: Final = 24 * 3600 * 1000
#: Integers every store keeps as they are (PostgreSQL and SQLite BIGINT, JSONB): signed 64-bit.
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**63 - 1
#: Nesting of free-form objects (event details, command args): deeper is refused.
MAX_JSON_DEPTH: Final = 8
#: Free text (messages, descriptions): printable characters, tab and line breaks. Never NUL (PostgreSQL refuses
#: it), another C0/C1 control character, a bidirectional override or isolate (which would make an operator read
#: a reordered text) or a byte-order mark. (A lone surrogate cannot arrive: the JSON decoder refuses it.)
TEXT_PATTERN: Final = (
    "^[^\\u0000-\\u0008\\u000b\\u000c\\u000e-\\u001f\\u007f-\\u009f\\u202a-\\u202e\\u2066-\\u2069\\ufeff]*$"
)
#: One-line strings (keys, versions, flats, plates): the same, without line or paragraph separators.
LINE_PATTERN: Final = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069\\ufeff]*$"
_CONTROLS = [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0)]
_BAD_TEXT = frozenset([*_CONTROLS, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0xFEFF])


def text_problem(s: str) -> str | None:
    """Why ``s`` cannot be stored as free text (None: it can)."""
    for ch in s:
        o = ord(ch)
        if o in _BAD_TEXT:
            return f"control character U+{o:04X}"  # (bidirectional controls and the BOM count as such)
        if 0xD800 <= o <= 0xDFFF:
            return f"lone surrogate U+{o:04X}"
    return None


def strict_base64(text: str) -> bytes:
    """Decode standard, padded base64 and refuse every other spelling of the same bytes (other alphabets, missing
    padding, stray bits in the last character): one text for one value. ValueError if it is not that."""
    import base64
    import binascii

    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64 (standard alphabet, padded)") from None
    if base64.b64encode(data).decode() != text:
        raise ValueError("not canonical base64 (stray bits after the last byte)")
    return data


def check_json(value: object, what: str, depth: int = 0) -> None:
    """Raise ValueError unless ``value`` (a free-form object from a message) holds only what every store keeps
    unchanged: strings without control characters, 64-bit integers, finite numbers, at most
    :data:`MAX_JSON_DEPTH` levels."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"{what} is nested deeper than {MAX_JSON_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise ValueError(f"{what} holds an integer outside the signed 64-bit range")
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{what} holds a number that is not finite")
    elif isinstance(value, str):
        if (problem := text_problem(value)) is not None:
            raise ValueError(f"{what} holds a string with a {problem}")
    elif isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"{what} has a key that is not a string")
            if (problem := text_problem(k)) is not None:
                raise ValueError(f"{what} has a key with a {problem}")
            check_json(v, what, depth + 1)
    elif isinstance(value, list | tuple):
        for v in value:
            check_json(v, what, depth + 1)
    else:
        raise ValueError(f"{what} holds a {type(value).__name__}, which JSON has not")
