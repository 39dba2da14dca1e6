"""Every prompt a gate can show has a Simplified Chinese translation, and a zh-CN gate shows it."""

from __future__ import annotations

import re
from pathlib import Path

from edge.i18n import prompt_text
from edge.thermal import screen
from edge.units import gate
from edge.vision import pipeline, quality


def _sources() -> set[str]:
    texts = {t for t in [*pipeline.PROMPTS.values(), *quality.PROMPTS.values(), pipeline.TURN_HEAD] if t}
    for mod, pattern in (
        (gate, r'_prompt\(\s*"([^"]+)"'),
        (screen, r'Retry\("([^"]+)"\)'),
        (screen, r'why = "([^"]+)"'),
    ):
        texts |= set(re.findall(pattern, Path(str(mod.__file__)).read_text()))
    return texts


def test_every_gate_prompt_is_translated() -> None:
    texts = _sources()
    assert len(texts) >= 15, texts  # the scan found the prompts
    missing = sorted(t for t in texts if prompt_text("zh-CN", t) == t)
    assert not missing, f"add these to edge/locale/zh_CN/LC_MESSAGES/gate.po: {missing}"


def test_prompts_follow_the_gate_language() -> None:
    assert prompt_text("en", "welcome") == "welcome"
    assert prompt_text("zh-CN", "welcome") == "欢迎回家"
    assert prompt_text("zh-CN", "calling flat {unit}…").format(unit="1203") == "正在呼叫 1203 室…"
