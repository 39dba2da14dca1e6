"""Shared dependencies: the service, the database connection, bearer-token auth, pagination."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, Field
from sqlalchemy import Connection, Select, Table, func, select

from cloud.actions import ActionError
from cloud.auth.scope import can
from cloud.auth.service import User
from cloud.ingest.store import now_ms
from cloud.service import CloudService
from cloud.settings import token_role
from protocol.limits import LINE_PATTERN, MAX_ID_LEN
from protocol.signing import load_public_key

_bearer = HTTPBearer(auto_error=False)

# What ids in a path look like, so the schema (and its fuzzer) says so and a stray value is a 422, not a lookup.
#: sites and devices: their ids are MQTT topic levels
SiteId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LEN, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
DeviceId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LEN, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
#: records the cloud or a registry names: assets, residents, media refs, commands, bundles, rollouts, requests
RecordKey = Annotated[str, Path(min_length=1, max_length=MAX_ID_LEN, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
#: an update bundle: ``<kind>-<version>``
BundleId = Annotated[str, Path(min_length=3, max_length=80, pattern=r"^[a-z][a-z0-9_]*-[0-9][0-9A-Za-z.+-]*$")]
Username = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]*$")]
#: a plate as registered (Chinese characters included): one line of text
PlatePath = Annotated[str, Path(min_length=1, max_length=16, pattern=LINE_PATTERN)]


def _public_key(value: str) -> str:
    load_public_key(value)  # raises ValueError: a 422 naming the problem
    return value


#: a device's own Ed25519 public key, as ``civicedge edge keygen`` prints it (32 bytes, base64)
DevicePublicKey = Annotated[
    str, Field(min_length=44, max_length=44, pattern=r"^[A-Za-z0-9+/]{43}=$"), AfterValidator(_public_key)
]


def get_service(request: Request) -> CloudService:
    svc: CloudService = request.app.state.service
    return svc


Service = Annotated[CloudService, Depends(get_service)]


def get_conn(svc: Service) -> Iterator[Connection]:
    with svc.engine.connect() as conn:
        yield conn


Conn = Annotated[Connection, Depends(get_conn)]


COOKIE = "ce_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FIRST_ADMIN_HINT = (
    "no account exists yet: create the first admin where the cloud runs (civicedge cloud create-user NAME), "
    "or give machines a token (CE_API_TOKENS=admin:<token>)"
)


def current_user(
    request: Request, svc: Service, cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> User:
    """Who is asking: a browser session (cookie; unsafe methods must echo its CSRF token in ``X-CSRF-Token``) or
    a machine with a bearer token (its role from ``CE_API_TOKENS``). Nobody else: before the first account or token
    exists the API is closed, and says how to create the first admin."""
    token = request.cookies.get(COOKIE)
    if token:
        s = svc.auth.session(token)
        if s is None:
            raise HTTPException(401, detail="session expired or unknown: log in again")
        if request.method not in SAFE_METHODS and not secrets.compare_digest(
            request.headers.get("X-CSRF-Token", ""), s.csrf
        ):
            raise HTTPException(403, detail="missing or wrong CSRF token (send X-CSRF-Token from /auth/me)")
        return s.user
    tokens = svc.settings.api_tokens
    if cred is not None:
        sent = cred.credentials.encode()
        for entry in tokens:
            role, token = token_role(entry)
            if secrets.compare_digest(sent, token.encode()):
                return User(0, f"api-token:{role}", role, None, None, "en")  # a machine, with the token's role
    if not tokens and not svc.auth.has_users():
        raise HTTPException(401, detail=FIRST_ADMIN_HINT)
    raise HTTPException(
        401,
        detail="missing or invalid bearer token (Authorization: Bearer <token>); people log in at POST /auth/login",
        headers={"WWW-Authenticate": "Bearer"},
    )


CurrentUser = Annotated[User, Depends(current_user)]


def require_token(user: CurrentUser) -> None:
    """Any authenticated caller (kept under its old name for the machine API routers)."""


def require_role(*roles: str) -> Any:
    def check(user: CurrentUser) -> User:
        if user.role not in roles:
            raise HTTPException(403, detail=f"this needs the role {' or '.join(roles)}; you are {user.role}")
        return user

    return check


def allow(perm: str) -> Any:
    """A route dependency: the caller's role must have ``perm`` (see cloud.auth.scope)."""

    def check(user: CurrentUser) -> User:
        if not can(user, perm):
            raise HTTPException(403, detail=f"your role ({user.role}) may not do this ({perm})")
        return user

    return Depends(check)


def acting(user: User, by: str | None) -> User:
    """Machines (bearer tokens) name the person they act for in ``by``; people act as themselves."""
    if user.id == 0 and by:
        return dataclasses.replace(user, username=by)
    return user


def run(fn: Any, *args: Any, **kw: Any) -> Any:
    """Call a cloud.actions function, answering its typed errors with their HTTP status."""
    try:
        return fn(*args, **kw)
    except ActionError as exc:
        raise HTTPException(exc.status, detail=str(exc)) from None


class PageParams(BaseModel):
    limit: int
    offset: int


def page_params(
    limit: Annotated[int, Query(ge=1, le=1000, description="items per page")] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000, description="items to skip")] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


Paging = Annotated[PageParams, Depends(page_params)]


class Page(BaseModel):
    items: list[dict[str, Any]]
    total: int
    limit: int
    offset: int
    next_offset: int | None


def page(items: list[dict[str, Any]], total: int, p: PageParams) -> Page:
    nxt = p.offset + len(items)
    return Page(items=items, total=total, limit=p.limit, offset=p.offset, next_offset=nxt if nxt < total else None)


def paged(conn: Connection, q: Select[Any], p: PageParams) -> Page:
    """Run a listing query one page at a time, with the total count."""
    total = conn.execute(select(func.count()).select_from(q.order_by(None).subquery())).scalar_one()
    items = [dict(r._mapping) for r in conn.execute(q.limit(p.limit).offset(p.offset))]
    return page(items, total, p)


def insert_new(svc: CloudService, table: Table, row: dict[str, Any], what: str) -> None:
    """Insert a record keyed by ``id``, or answer 409 if one already exists."""
    with svc.engine.begin() as conn:
        if conn.execute(select(table.c.id).where(table.c.id == row["id"])).first():
            raise HTTPException(409, detail=f"{what} {row['id']!r} exists")
        conn.execute(table.insert().values(**row, created_ms=now_ms()))
