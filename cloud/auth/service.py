"""Accounts and sessions.

* Passwords are hashed with Argon2id (pwdlib's recommended parameters); a login is checked in constant time
  whether or not the user exists.
* A session is a random 32-byte token in an HttpOnly, SameSite=Lax cookie; the database keeps only its sha256,
  with a per-session CSRF token that unsafe requests must echo in ``X-CSRF-Token``.
* Logins are limited per user name *and* client address together: after ``MAX_FAILURES`` failures in
  ``WINDOW_S`` each further attempt from that address for that user waits twice as long as the last (up to
  ``MAX_DELAY_S``), answered with 429 and the time to wait. Someone guessing from elsewhere slows only themselves:
  the user still logs in from their own address. An address (IPv6: its /64) that tries many users is limited on
  its own (``MAX_ADDRESS_FAILURES``), and a user guessed at from many addresses is slowed for everyone by short
  delays (``MAX_USER_FAILURES``, at most ``MAX_USER_DELAY_S``). An attempt is counted before the password is
  checked, so parallel guesses cannot all get through.
* Disabling a user or changing their password ends their sessions at once.
* Every account change and login is written to the audit log.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from pwdlib import PasswordHash
from sqlalchemy import Engine, delete, select, update

from cloud.auth import tables as a
from cloud.ingest.store import now_ms, printable

MAX_FAILURES = 5
MAX_ADDRESS_FAILURES = 50
#: failures for one user from every address together before each attempt at that user waits (a distributed
#: guesser is slowed; the delay stays short, so the user is never locked out for long)
MAX_USER_FAILURES = 20
MAX_USER_DELAY_S = 60
WINDOW_S = 900.0
MAX_DELAY_S = 900
SESSION_S = 12 * 3600
_hasher = PasswordHash.recommended()
_DUMMY = _hasher.hash("not a password")


class AuthError(Exception):
    """Wrong credentials (the message never says which part was wrong)."""


class RateLimited(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed logins: try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    role: str
    department_id: str | None
    resident_id: str | None
    language: str


@dataclass(frozen=True, slots=True)
class Session:
    user: User
    csrf: str
    expires_ms: int


def address_group(client: str) -> str:
    """The unit a client address is limited as: itself for IPv4, its /64 for IPv6 (one subscriber holds a /64)."""
    try:
        ip = ipaddress.ip_address(client)
    except ValueError:
        return client
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _h(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Auth:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._failures: dict[str, deque[float]] = {}
        self._attempt_lock = threading.Lock()
        self._lock = threading.Lock()
        self._has_users: tuple[bool, float] | None = None

    def has_users(self) -> bool:
        """Whether any console account exists (cached briefly: asked on every unauthenticated request)."""
        now = time.monotonic()
        if self._has_users is None or now - self._has_users[1] > 5.0:
            with self.engine.connect() as conn:
                exists = conn.execute(select(a.users.c.id).limit(1)).first() is not None
            self._has_users = (exists, now)
        return self._has_users[0]

    def create_user(
        self,
        username: str,
        password: str,
        role: str,
        department_id: str | None = None,
        resident_id: str | None = None,
        language: str = "en",
        by: str = "system",
    ) -> User:
        if role not in a.ROLES:
            raise ValueError(f"role must be one of {', '.join(a.ROLES)}")
        if language not in ("en", "zh-CN"):
            raise ValueError("language must be en or zh-CN")
        if len(password) < 10:
            raise ValueError("a password has at least 10 characters")
        with self.engine.begin() as conn:
            if conn.execute(select(a.users.c.id).where(a.users.c.username == username)).first():
                raise ValueError(f"user {username} exists")
            res = conn.execute(
                a.users.insert().values(
                    username=username,
                    password_hash=_hasher.hash(password),
                    role=role,
                    department_id=department_id,
                    resident_id=resident_id,
                    language=language,
                    disabled=False,
                    created_ms=now_ms(),
                )
            )
            uid = res.inserted_primary_key[0]  # type: ignore[index]
        self._has_users = (True, time.monotonic())
        self.audit(by, "user.create", username, {"role": role, "department_id": department_id})
        return User(int(uid), username, role, department_id, resident_id, language)

    def limited(self, keys: list[str], free: int = MAX_FAILURES, cap: int = MAX_DELAY_S) -> int:
        """Seconds to wait before another attempt for any of ``keys`` (0: go ahead): nothing for the first
        ``free`` failures in ``WINDOW_S``, then 1 s after the last failure, doubling with each one."""
        now = time.monotonic()
        worst = 0
        with self._lock:
            for k in keys:
                q = self._failures.get(k)
                while q and now - q[0] > WINDOW_S:
                    q.popleft()
                if q and len(q) >= free:
                    delay = min(cap, 2 ** (len(q) - free))
                    worst = max(worst, int(delay - (now - q[-1])) + 1 if now - q[-1] < delay else 0)
        return worst

    def forgive(self, keys: list[str]) -> None:
        """Take back the attempt counted for ``keys`` (it succeeded)."""
        with self._lock:
            for k in keys:
                q = self._failures.get(k)
                if q:
                    q.pop()

    def failed(self, keys: list[str]) -> None:
        """Count a failed attempt against each key (logins, claim tokens)."""
        now = time.monotonic()
        with self._lock:
            for k in keys:
                self._failures.setdefault(k, deque()).append(now)

    def login(self, username: str, password: str, client: str) -> tuple[str, Session]:
        source = address_group(client)
        name = username.lower()
        pair, address, everyone = [f"user:{name}@{source}"], [f"ip:{source}"], [f"user:{name}"]
        with self._attempt_lock:  # checked and counted together: parallel guesses cannot all pass the check
            wait = max(
                self.limited(pair),
                self.limited(address, MAX_ADDRESS_FAILURES),
                self.limited(everyone, MAX_USER_FAILURES, MAX_USER_DELAY_S),
            )
            if wait:
                raise RateLimited(wait)
            keys = pair + address + everyone
            self.failed(keys)  # counted before the password is checked; taken back if it was right
        with self.engine.connect() as conn:
            row = conn.execute(select(a.users).where(a.users.c.username == username)).first()
        ok = _hasher.verify(password, row.password_hash if row else _DUMMY)
        if row is None or not ok or row.disabled:
            self.audit(username, "login.failed", client)
            raise AuthError("wrong user name or password")
        self.forgive(keys)
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
        expires = now_ms() + SESSION_S * 1000
        with self.engine.begin() as conn:
            conn.execute(
                a.sessions.insert().values(
                    token_hash=_h(token), user_id=row.id, csrf=csrf, created_ms=now_ms(), expires_ms=expires
                )
            )
            conn.execute(delete(a.sessions).where(a.sessions.c.expires_ms < now_ms()))
        self.audit(username, "login", client)
        user = User(row.id, row.username, row.role, row.department_id, row.resident_id, row.language)
        return token, Session(user, csrf, expires)

    def session(self, token: str) -> Session | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(a.sessions.c.csrf, a.sessions.c.expires_ms, a.users)
                .join(a.users, a.users.c.id == a.sessions.c.user_id)
                .where(a.sessions.c.token_hash == _h(token))
            ).first()
        if row is None or row.expires_ms < now_ms() or row.disabled:
            return None
        return Session(
            User(row.id, row.username, row.role, row.department_id, row.resident_id, row.language),
            row.csrf,
            row.expires_ms,
        )

    def change(self, username: str, by: str, *, disabled: bool | None = None, password: str | None = None) -> int:
        """Disable or enable a user, or set their password; either ends every session they have. Returns the
        user's id (the caller ends their live streams too)."""
        if password is not None and len(password) < 10:
            raise ValueError("a password has at least 10 characters")
        with self.engine.begin() as conn:
            row = conn.execute(select(a.users.c.id).where(a.users.c.username == username)).first()
            if row is None:
                raise LookupError(f"user {username}")
            values: dict[str, Any] = {}
            if disabled is not None:
                values["disabled"] = disabled
            if password is not None:
                values["password_hash"] = _hasher.hash(password)
            if values:
                conn.execute(update(a.users).where(a.users.c.id == row.id).values(**values))
                conn.execute(delete(a.sessions).where(a.sessions.c.user_id == row.id))
        what = {"disabled": disabled} if disabled is not None else {}
        self.audit(by, "user.change", username, {**what, "password": password is not None})
        return int(row.id)

    def set_language(self, user_id: int, language: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(a.users).where(a.users.c.id == user_id).values(language=language))

    def logout(self, token: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(a.sessions).where(a.sessions.c.token_hash == _h(token)))

    def audit(self, username: str, action: str, target: str = "", detail: dict[str, Any] | None = None) -> None:
        """One line in the audit log. ``username`` may be what a stranger typed at the login: kept to the column."""
        with self.engine.begin() as conn:
            conn.execute(
                a.audit_log.insert().values(
                    at_ms=now_ms(),
                    username=printable(username, 64),
                    action=action,
                    target=printable(target, 200),
                    detail=detail or {},
                )
            )
