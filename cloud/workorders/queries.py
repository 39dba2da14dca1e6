"""Reading work orders (for the API and the console pages; no SQL in views)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Select, func, select

from cloud.auth.scope import work_order_filter
from cloud.auth.service import User
from cloud.workorders.tables import work_orders


def count_by_state(conn: Connection, user: User) -> dict[str, int]:
    c = work_orders.c
    q = select(c.state, func.count()).where(work_order_filter(user)).group_by(c.state)
    return {state: int(n) for state, n in conn.execute(q)}


def overdue(conn: Connection, user: User, now: int) -> int:
    """Orders this user may see that are past their due time and not yet resolved."""
    c = work_orders.c
    q = select(func.count()).where(work_order_filter(user), c.due_ms < now, c.state.not_in(["resolved", "closed"]))
    return int(conn.execute(q).scalar_one())


def orders(
    user: User, state: str | None = None, department: str | None = None, overdue_at: int | None = None
) -> Select[Any]:
    """Orders this user may see (a department its own, a grid worker its own reports), soonest due first;
    ``overdue_at``: only those past their due time then and not yet resolved."""
    c = work_orders.c
    q = select(work_orders).where(work_order_filter(user)).order_by(c.due_ms)
    if state:
        q = q.where(c.state == state)
    if department:
        q = q.where(c.department_id == department)
    if overdue_at is not None:
        q = q.where(c.due_ms < overdue_at, c.state.not_in(["resolved", "closed"]))
    return q


def reported_by(conn: Connection, user: User, limit: int = 30) -> list[dict[str, Any]]:
    """The orders this person reported (a grid worker's own reports), newest first."""
    c = work_orders.c
    q = select(work_orders).where(work_order_filter(user), c.reporter == user.username)
    return [dict(r._mapping) for r in conn.execute(q.order_by(c.created_ms.desc()).limit(limit))]
