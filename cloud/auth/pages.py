"""The console's users page (admin): accounts, roles, the audit log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from cloud import actions
from cloud.api.deps import Service
from cloud.auth import queries
from cloud.console.app import Csrf, Session, act
from cloud.console.render import render, rows_of

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/users", response_class=HTMLResponse)
def users(request: Request, svc: Service, page: Session) -> HTMLResponse:
    page.need("users.manage")
    with svc.engine.connect() as conn:
        rows = rows_of(conn.execute(queries.users()))
        audit = rows_of(conn.execute(queries.audit().limit(100)))
    return render(
        request,
        "users.html",
        page.user,
        page.csrf,
        users=rows,
        audit=audit,
        default_language=svc.settings.default_language,
    )


@router.post("/users")
def create_user(
    request: Request,
    svc: Service,
    page: Session,
    username: Annotated[str, Form(min_length=2, max_length=64)],
    password: Annotated[str, Form(max_length=200)],
    role: Annotated[str, Form()],
    department_id: Annotated[str, Form()] = "",
    resident_id: Annotated[str, Form()] = "",
    language: Annotated[str, Form()] = "en",
    csrf: Csrf = None,
) -> RedirectResponse:
    def create() -> None:
        actions.need(page.user, "users.manage")
        try:
            svc.auth.create_user(
                username, password, role, department_id or None, resident_id or None, language, by=page.user.username
            )
        except ValueError as exc:
            raise actions.ActionError(str(exc)) from None

    return act(request, page, csrf, "/console/users", create, "User created.")
