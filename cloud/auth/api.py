"""Log in and out (session cookie + CSRF token), who am I, users (admin), the audit log (admin)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from pydantic import BaseModel, Field

from cloud.api.deps import COOKIE, Conn, CurrentUser, Page, Paging, Service, Username, paged, require_role
from cloud.api.models import LoggedOut, Me, UserChanged, UserOut
from cloud.auth import queries
from cloud.auth.service import AuthError, RateLimited, User

router = APIRouter(tags=["auth"])


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=200)


def _me(u: User, csrf: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "username": u.username,
        "role": u.role,
        "department_id": u.department_id,
        "resident_id": u.resident_id,
        "language": u.language,
    }
    if csrf:
        out["csrf"] = csrf
    return out


@router.post("/auth/login", response_model=Me, response_model_exclude_unset=True)
def login(body: LoginIn, request: Request, response: Response, svc: Service) -> dict[str, Any]:
    client = request.client.host if request.client else "?"
    try:
        token, s = svc.auth.login(body.username, body.password, client)
    except RateLimited as exc:
        raise HTTPException(429, detail=str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from None
    except AuthError as exc:
        raise HTTPException(401, detail=str(exc)) from None
    response.set_cookie(
        COOKIE, token, httponly=True, samesite="lax", secure=svc.settings.cookies_secure, max_age=12 * 3600, path="/"
    )
    return _me(s.user, s.csrf)


@router.post("/auth/logout", response_model=LoggedOut)
def logout(request: Request, response: Response, svc: Service, user: CurrentUser) -> dict[str, Any]:
    token = request.cookies.get(COOKIE)
    if token:
        svc.auth.logout(token)
    response.delete_cookie(COOKIE, path="/")
    return {"logged_out": user.username}


@router.get("/auth/me", response_model=Me, response_model_exclude_unset=True)
def me(request: Request, user: CurrentUser, svc: Service) -> dict[str, Any]:
    token = request.cookies.get(COOKIE)
    s = svc.auth.session(token) if token else None
    return _me(user, s.csrf if s else None)


class UserIn(BaseModel):
    username: str = Field(min_length=2, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")
    password: str = Field(min_length=10, max_length=200)
    role: Literal["admin", "operator", "department", "grid_worker", "resident"]
    department_id: str | None = None
    resident_id: str | None = None
    language: Literal["en", "zh-CN"] | None = Field(default=None, description="default: CE_DEFAULT_LANGUAGE")


@router.post("/api/users", status_code=201, response_model=UserOut, dependencies=[Depends(require_role("admin"))])
def create_user(body: UserIn, svc: Service, user: CurrentUser) -> dict[str, Any]:
    try:
        fields = body.model_dump()
        fields["language"] = body.language or svc.settings.default_language
        u = svc.auth.create_user(**fields, by=user.username)
    except ValueError as exc:
        raise HTTPException(409 if "exists" in str(exc) else 422, detail=str(exc)) from None
    return _me(u)


class UserChange(BaseModel):
    disabled: bool | None = Field(default=None, description="true: the user cannot log in; their sessions end")
    password: str | None = Field(default=None, min_length=10, max_length=200, description="a new password")


@router.patch("/api/users/{username}", response_model=UserChanged, dependencies=[Depends(require_role("admin"))])
def change_user(username: Username, body: UserChange, svc: Service, user: CurrentUser) -> dict[str, Any]:
    """Disable, enable, or set a new password: every session of that user ends, and their live streams with it."""
    try:
        uid = svc.auth.change(username, user.username, disabled=body.disabled, password=body.password)
    except LookupError:
        raise HTTPException(404, detail=f"no user {username}") from None
    ended = svc.live.end_user(uid)
    changed = {"disabled": body.disabled, "password_changed": body.password is not None}
    return {"username": username, **changed, "streams_ended": ended}


@router.get("/api/users", response_model=Page, dependencies=[Depends(require_role("admin"))])
def list_users(conn: Conn, p: Paging) -> Page:
    return paged(conn, queries.users(), p)


@router.get("/api/audit", response_model=Page, dependencies=[Depends(require_role("admin"))])
def audit(conn: Conn, p: Paging, username: Annotated[str | None, "filter"] = None) -> Page:
    return paged(conn, queries.audit(username), p)
