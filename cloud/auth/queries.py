"""Reading accounts and the audit log (for the API and the console pages; no SQL in views)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, select

from cloud.auth import tables as a


def users() -> Select[Any]:
    """Every account, by name, without anything secret."""
    c = a.users.c
    return select(
        c.id, c.username, c.role, c.department_id, c.resident_id, c.language, c.disabled, c.created_ms
    ).order_by(c.username)


def audit(username: str | None = None) -> Select[Any]:
    """The audit log, newest first."""
    c = a.audit_log.c
    q = select(a.audit_log).order_by(c.at_ms.desc(), c.id.desc())
    return q.where(c.username == username) if username else q
