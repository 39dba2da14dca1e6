"""Every console text has a Simplified Chinese translation, and locale formats follow the user's language."""

from __future__ import annotations

import re
from pathlib import Path

from cloud.console.render import HERE, Formats, gettext_for

_LITERAL = re.compile(r"""_\(\s*"((?:[^"\\]|\\.)*)"\s*\)|_\(\s*'((?:[^'\\]|\\.)*)'\s*\)""")
_OK_MESSAGE = re.compile(r'^\s+"([A-Z][^"]*\.)",?$|, "([A-Z][^"]*\.)",\s*$', re.M)  # act(…, "Done.")


def _texts() -> set[str]:
    texts: set[str] = set()
    for f in [*(HERE / "templates").glob("*.html"), HERE / "app.py"]:
        for m in _LITERAL.finditer(f.read_text()):
            texts.add((m.group(1) if m.group(1) is not None else m.group(2)).replace("\\'", "'"))
    pages = sorted(HERE.parent.glob("*/pages.py"))  # each domain's console pages (cloud/<domain>/pages.py)
    assert len(pages) >= 10, pages
    for f in (*pages, HERE / "overview.py", HERE / "mobile.py"):
        for m in _OK_MESSAGE.finditer(f.read_text()):
            texts.add(m.group(1) or m.group(2))
    return texts


def test_every_console_text_is_translated() -> None:
    texts = _texts()
    assert len(texts) > 150 and "Work order updated." in texts  # the scan sees templates and messages
    zh = gettext_for("zh-CN")
    missing = sorted(t for t in texts if zh(t) == t)
    assert not missing, f"add these to {Path('cloud/console/locale/zh_CN/LC_MESSAGES/console.po')}: {missing}"


def test_values_shown_on_pages_are_translated() -> None:
    zh = gettext_for("zh-CN")
    for value in (
        "admin",
        "operator",
        "department",
        "grid_worker",
        "resident",
        "critical",
        "major",
        "active",
        "acknowledged",
        "cleared",
        "reported",
        "dispatched",
        "accepted",
        "resolved",
        "closed",
        "pending",
        "approved",
        "denied",
        "expired",
        "resident_match",
        "fever",
        "spoof",
        "deleted",
        "withdrawn",
    ):
        assert zh(value) != value, value


def test_dates_and_numbers_follow_the_locale() -> None:
    ms = 1_795_000_000_000  # 2026-11-18 11:06:40 UTC
    en, zh = Formats("en", "Asia/Shanghai"), Formats("zh-CN", "Asia/Shanghai")
    assert en.when(ms, "medium") == "Nov 18, 2026, 7:06:40\u202fPM"
    assert zh.when(ms, "medium") == "2026年11月18日 19:06:40"
    assert en.num(12345.678) == "12,345.7" and zh.num(12345.678) == "12,345.7"
    assert Formats("en", "UTC").size(165_937_152) == "165.9 MB"
    assert en.num(None) == en.num(float("nan")) == "—"
    assert "minute" in en.ago(ms - 120_000, ms) and "分钟" in zh.ago(ms - 120_000, ms)
