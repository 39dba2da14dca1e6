"""The console's overview: what needs attention now, across every domain."""

from __future__ import annotations

from collections import Counter, defaultdict

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from cloud.alarms import queries as alarm_queries
from cloud.alarms.queries import open_alarms
from cloud.api.deps import Service
from cloud.auth.scope import can
from cloud.console.app import Session
from cloud.console.render import SEVERITIES, WO_STATES, render
from cloud.devices import queries as device_queries
from cloud.ingest.store import now_ms
from cloud.workorders import queries as work_queries

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, svc: Service, page: Session) -> HTMLResponse:
    page.need("overview")
    user = page.user
    with svc.engine.connect() as conn:
        devices = device_queries.count_by_kind_status(conn) if can(user, "devices.view") else {}
        sev = alarm_queries.open_by_severity(conn, user)
        wo = work_queries.count_by_state(conn, user)
        overdue = work_queries.overdue(conn, user, now_ms())
    status = Counter[str]()
    kinds: dict[str, Counter[str]] = defaultdict(Counter)
    for (kind, st), n in devices.items():
        status[st] += n
        kinds[kind][st] += n
    return render(
        request,
        "overview.html",
        user,
        page.csrf,
        device_status=status,
        kinds=dict(sorted(kinds.items())),
        severities={s: sev.get(s, 0) for s in SEVERITIES},
        work={s: wo.get(s, 0) for s in WO_STATES},
        overdue=overdue,
        alarms=open_alarms(svc.engine, user, 20),
    )
