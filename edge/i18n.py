"""The gate's screen prompts in the gate's language (catalogs in ``edge/locale``; the machinery is
:mod:`civicedge.i18n`)."""

from __future__ import annotations

from pathlib import Path

from civicedge.i18n import translations

EDGE_LOCALES = Path(__file__).parent / "locale"


def prompt_text(lang: str, text: str) -> str:
    """A gate screen prompt in the gate's language."""
    return translations(EDGE_LOCALES, "gate", lang).gettext(text)
