"""Licence plates of mainland China: one normal form for the allow-list, the ANPR reading and the cloud.

A plate is a province character, the issuing-office letter, then five characters (ordinary plates; the last
may be 学 learner, 警 police, 挂 trailer, 港/澳 cross-border) or six (new-energy plates: D or F first for small
cars, last for large ones). The letters I and O are never issued after the office letter, so an ANPR reading
of I or O there is the digit 1 or 0. Spaces, dots, dashes and full-width forms are dropped or folded.
"""

from __future__ import annotations

import re
import unicodedata

PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼使领"
_LETTER = "A-HJ-NP-Z"
_SERIAL = f"[{_LETTER}0-9]"
_ORDINARY = re.compile(f"^[{PROVINCES}][{_LETTER}]{_SERIAL}{{4}}(?:{_SERIAL}|[学警挂港澳])$")
_NEW_ENERGY = re.compile(f"^[{PROVINCES}][{_LETTER}](?:[DF]{_SERIAL}{{5}}|[0-9]{{5}}[DF])$")
_DROP = str.maketrans("", "", " \t·•.-_")
_CONFUSABLE = str.maketrans({"O": "0", "I": "1"})


class PlateError(ValueError):
    """Not a plate; the message says why (for the event log and the import report)."""


def normalize(raw: str) -> str:
    s = unicodedata.normalize("NFKC", raw).upper().translate(_DROP)
    if len(s) < 7:
        raise PlateError(f"{raw!r}: too short for a plate ({len(s)} characters)")
    if s[0] not in PROVINCES:
        raise PlateError(f"{raw!r}: does not start with a province character")
    s = s[:2] + s[2:].translate(_CONFUSABLE)
    if _NEW_ENERGY.match(s) or _ORDINARY.match(s):
        return s
    raise PlateError(f"{raw!r}: not a valid plate after normalisation ({s})")


def is_new_energy(plate: str) -> bool:
    return bool(_NEW_ENERGY.match(plate))
