"""Rendering: Jinja2 templates with the user's language (gettext catalogs) and locale formats for dates,
times, numbers and durations in the deployment's time zone."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_datetime, format_timedelta
from babel.numbers import format_decimal, format_percent
from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from civicedge.i18n import LANGUAGES, babel_locale, translations
from cloud.auth.scope import can
from cloud.auth.service import User

HERE = Path(__file__).parent
LOCALES = HERE / "locale"
env = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)

SEVERITIES = ("critical", "major", "minor", "warning", "info")
WO_STATES = ("reported", "dispatched", "accepted", "resolved", "closed")


def gettext_for(lang: str) -> Any:
    """The catalog's gettext; a value with no translation that looks like a key (``grid_worker``) is shown
    as words (``grid worker``)."""
    gettext = translations(LOCALES, "console", lang if lang in LANGUAGES else "en").gettext

    def _(text: str) -> str:
        out: str = gettext(text)
        if out is text and "_" in text and " " not in text:
            return text.replace("_", " ")
        return out

    return _


class Formats:
    """Locale formats for one request (bound into the templates as filters)."""

    def __init__(self, lang: str, tz: str) -> None:
        self.locale = babel_locale(lang)
        try:
            self.tz: dt.tzinfo = ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            self.tz = dt.UTC

    def when(self, ms: int | None, fmt: str = "short") -> str:
        if ms is None:
            return "—"
        d = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
        return format_datetime(d, format=fmt, tzinfo=self.tz, locale=self.locale)

    def ago(self, ms: int | None, now_ms: int) -> str:
        if ms is None:
            return "—"
        return format_timedelta(
            dt.timedelta(milliseconds=ms - now_ms), add_direction=True, threshold=1.1, locale=self.locale
        )

    def num(self, v: object, digits: int = 1) -> str:
        """A number in the locale's format; anything else (missing, undefined, NaN) as a dash."""
        if not isinstance(v, int | float) or v != v:
            return "—"
        return format_decimal(v, format=f"#,##0.{'#' * digits}" if digits else "#,##0", locale=self.locale)

    def size(self, v: object) -> str:
        """Bytes as kB / MB / GB."""
        if not isinstance(v, int | float):
            return "—"
        for unit, d in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if abs(v) >= d:
                return f"{self.num(v / d, 1)} {unit}"
        return f"{self.num(v, 0)} B"

    def pct(self, v: object) -> str:
        return format_percent(v, locale=self.locale) if isinstance(v, int | float) else "—"


def render(
    request: Request,
    template: str,
    user: User | None,
    csrf: str = "",
    status: int = 200,
    **ctx: Any,
) -> HTMLResponse:
    svc = request.app.state.service
    lang = user.language if user else request.query_params.get("lang", svc.settings.default_language)
    _ = gettext_for(lang)
    f = Formats(lang, svc.settings.timezone)
    from cloud.ingest.store import now_ms

    html = env.get_template(template).render(
        request=request,
        user=user,
        csrf=csrf,
        lang=lang,
        _=_,
        gettext=_,
        can=(lambda perm: user is not None and can(user, perm)),
        f=f,
        now=now_ms(),
        path=request.url.path,
        SEVERITIES=SEVERITIES,
        WO_STATES=WO_STATES,
        **ctx,
    )
    return HTMLResponse(html, status_code=status)


def rows_of(result: Any) -> list[dict[str, Any]]:
    """Query rows as plain dicts (for the templates)."""
    return [dict(r._mapping) for r in result]
