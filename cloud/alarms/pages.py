"""The console's alarm pages: open alarms, one alarm with its history, operator actions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from cloud import actions
from cloud.alarms import actions as alarms_actions
from cloud.alarms import queries
from cloud.api.deps import Service
from cloud.console.app import Csrf, Session, act, check_csrf
from cloud.console.render import render, rows_of

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/alarms", response_class=HTMLResponse)
def alarms(request: Request, svc: Service, page: Session, state: str = "open") -> HTMLResponse:
    page.need("alarms.view")
    q = queries.alarms(page.user, state if state in ("open", "cleared") else None).limit(200)
    with svc.engine.connect() as conn:
        rows = rows_of(conn.execute(q))
    return render(request, "alarms.html", page.user, page.csrf, alarms=rows, state=state)


@router.get("/alarms/{alarm_id}", response_class=HTMLResponse)
def alarm(request: Request, svc: Service, page: Session, alarm_id: int) -> HTMLResponse:
    page.need("alarms.view")
    with svc.engine.connect() as conn:
        a = queries.alarm(conn, page.user, alarm_id)
        if a is None:
            return render(request, "notfound.html", page.user, page.csrf, status=404, what=f"#{alarm_id}")
        hist = queries.history(conn, alarm_id)
    return render(request, "alarm.html", page.user, page.csrf, a=a, history=hist)


@router.post("/alarms/{alarm_id}/{action}", response_model=None)
def alarm_action(request: Request, svc: Service, page: Session, alarm_id: int, action: str, csrf: Csrf = None) -> Any:
    """Ack / clear; from htmx the alarm's row comes back in place, from a plain form the page reloads."""
    what = {"ack": "acknowledged", "clear": "cleared"}.get(action)
    if what is None:
        return render(request, "notfound.html", page.user, page.csrf, status=404, what=f"alarm action {action}")
    if request.headers.get("HX-Request"):
        check_csrf(request, page, csrf)
        try:
            row = alarms_actions.alarm_act(svc, page.user, alarm_id, what)
        except actions.ActionError as exc:
            # the error names things people and devices chose (an operator's name, an alarm's text): text, not HTML
            return HTMLResponse(
                Markup('<tr><td colspan="7" class="err">{}</td></tr>').format(str(exc)), status_code=200
            )
        return render(request, "_alarm_row.html", page.user, page.csrf, a=row)
    return act(
        request,
        page,
        csrf,
        "/console/alarms",
        lambda: alarms_actions.alarm_act(svc, page.user, alarm_id, what),
        "Done.",
    )
