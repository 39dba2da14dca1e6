"""The console's plumbing: log in and out, the signed-in user of a page, CSRF on forms, flash messages,
static files (the project's own, and htmx / uPlot from ``node_modules``), error pages."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from civicedge.i18n import LANGUAGES
from cloud.actions import ActionError
from cloud.api.deps import COOKIE, Service
from cloud.auth.scope import can, home
from cloud.auth.service import AuthError, RateLimited, User
from cloud.console.render import HERE, gettext_for, render

VENDOR = HERE / "node_modules"
router = APIRouter(prefix="/console", include_in_schema=False)
#: a form's CSRF token field
Csrf = Annotated[str | None, Form()]


class LoginRequired(Exception):
    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


class PageForbidden(Exception):
    def __init__(self, user: User, csrf: str, message: str) -> None:
        self.user, self.csrf, self.message = user, csrf, message


@dataclass(frozen=True, slots=True)
class Page:
    """The signed-in person on a console page, with the session's CSRF token for its forms."""

    user: User
    csrf: str

    def need(self, perm: str) -> None:
        if not can(self.user, perm):
            raise PageForbidden(self.user, self.csrf, f"{self.user.role}: {perm}")


def page_session(request: Request, svc: Service) -> Page:
    token = request.cookies.get(COOKIE)
    s = svc.auth.session(token) if token else None
    if s is None:
        nxt = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(nxt)
    return Page(s.user, s.csrf)


Session = Annotated[Page, Depends(page_session)]


def raise_forbidden(page: Page, message: str) -> None:
    raise PageForbidden(page.user, page.csrf, message)


def check_csrf(request: Request, page: Page, form_token: str | None) -> None:
    sent = form_token or request.headers.get("X-CSRF-Token", "")
    if not secrets.compare_digest(sent, page.csrf):
        raise PageForbidden(page.user, page.csrf, "csrf")


def back(url: str, ok: str | None = None, err: str | None = None) -> RedirectResponse:
    """Post/redirect/get, with a message for the next page."""
    q = {k: v for k, v in (("ok", ok), ("err", err)) if v}
    sep = "&" if "?" in url else "?"
    return RedirectResponse(url + (sep + urlencode(q) if q else ""), status_code=303)


def act(request: Request, page: Page, csrf: str | None, url: str, fn: Callable[[], Any], ok: str) -> RedirectResponse:
    """Run a form's action for the signed-in user; its error (if any) is shown on the page it returns to."""
    check_csrf(request, page, csrf)
    _ = gettext_for(page.user.language)
    try:
        fn()
    except ActionError as exc:
        if exc.status == 403:
            raise PageForbidden(page.user, page.csrf, str(exc)) from None
        return back(url, err=str(exc))
    return back(url, ok=_(ok))


# --- log in and out ----------------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "") -> HTMLResponse:
    return render(request, "login.html", None, next=next, error=None)


@router.post("/login", response_model=None)
def login(
    request: Request,
    svc: Service,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=200)],
    next: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    client = request.client.host if request.client else "?"
    _ = gettext_for(request.query_params.get("lang", svc.settings.default_language))
    try:
        token, s = svc.auth.login(username, password, client)
    except RateLimited as exc:
        msg = _("Too many failed logins: try again in {n} s.").format(n=exc.retry_after_s)
        return render(request, "login.html", None, status=429, next=next, error=msg, username=username)
    except AuthError:
        msg = _("Wrong user name or password.")
        return render(request, "login.html", None, status=401, next=next, error=msg, username=username)
    target = next if next.startswith("/console") and not next.startswith("//") else home(s.user)
    resp = RedirectResponse(target, status_code=303)
    resp.set_cookie(
        COOKIE, token, httponly=True, samesite="lax", secure=svc.settings.cookies_secure, max_age=12 * 3600, path="/"
    )
    return resp


@router.post("/logout")
def logout(request: Request, svc: Service, page: Session, csrf: Annotated[str | None, Form()] = None) -> Response:
    check_csrf(request, page, csrf)
    token = request.cookies.get(COOKIE)
    if token:
        svc.auth.logout(token)
    resp = RedirectResponse("/console/login", status_code=303)
    resp.delete_cookie(COOKIE, path="/")
    return resp


@router.post("/language")
def language(
    request: Request,
    svc: Service,
    page: Session,
    lang: Annotated[str, Form()],
    csrf: Annotated[str | None, Form()] = None,
) -> Response:
    check_csrf(request, page, csrf)
    if lang in LANGUAGES:
        svc.auth.set_language(page.user.id, lang)
    ref = request.headers.get("referer", "")
    path = "/console" + ref.split("/console", 1)[1] if "/console" in ref else home(page.user)
    return RedirectResponse(path, status_code=303)


# --- wiring ------------------------------------------------------------------------------------------------


def install(app: FastAPI) -> None:
    """The console's own routes (login, logout, language), its static files and error pages; the pages
    themselves live with their domains and are included by :mod:`cloud.app`."""
    app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")
    if VENDOR.is_dir():
        app.mount("/console/vendor", StaticFiles(directory=VENDOR), name="console-vendor")

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired) -> Response:
        if request.headers.get("HX-Request"):
            return Response(status_code=401, headers={"HX-Redirect": "/console/login"})
        return RedirectResponse(f"/console/login?next={quote(exc.next_url)}", status_code=303)

    @app.exception_handler(PageForbidden)
    async def forbidden(request: Request, exc: PageForbidden) -> Response:
        return render(request, "forbidden.html", exc.user, exc.csrf, status=403, reason=exc.message)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/console/", status_code=307)
