"""Message catalogs (gettext ``.po`` files read with Babel) and locale-aware formats, for the gate's screen
prompts (``edge/locale``) and the cloud console (``cloud/console/locale``). Languages: ``en`` (the source text)
and ``zh-CN``.

Catalogs are compiled in memory when first used, so the ``.po`` files in the repository are the only source.
"""

from __future__ import annotations

import functools
import gettext
import io
from pathlib import Path

from babel import Locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

LANGUAGES = ("en", "zh-CN")


def babel_locale(lang: str) -> Locale:
    return Locale.parse(lang.replace("-", "_")) if lang in LANGUAGES else Locale.parse("en")


@functools.cache
def translations(locale_dir: Path, domain: str, lang: str) -> gettext.NullTranslations:
    """The catalog for ``lang`` (``en`` and unknown languages: the source text)."""
    po = locale_dir / lang.replace("-", "_") / "LC_MESSAGES" / f"{domain}.po"
    if lang == "en" or not po.exists():
        return gettext.NullTranslations()
    with po.open("rb") as f:
        catalog = read_po(f, locale=lang.replace("-", "_"))
    buf = io.BytesIO()
    write_mo(buf, catalog)
    buf.seek(0)
    return Translations(buf, domain)
