"""The console's gates and residents pages (consent, erasure, face enrolment)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from cloud import actions
from cloud.api.deps import Service
from cloud.console.app import Csrf, Session, act
from cloud.console.render import render, rows_of
from cloud.gate import actions as gate_actions
from cloud.gate import queries

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/gates", response_class=HTMLResponse)
def gates(request: Request, svc: Service, page: Session) -> HTMLResponse:
    page.need("gate.view")
    svc.gate.expire_requests()
    with svc.engine.connect() as conn:
        decisions = rows_of(conn.execute(queries.decisions(None, None, None).limit(100)))
        visitors = rows_of(conn.execute(queries.visitor_requests(None, None, None).limit(50)))
    temps = [d["body"].get("temperature_c") for d in decisions if d["body"].get("temperature_c") is not None]
    return render(
        request,
        "gates.html",
        page.user,
        page.csrf,
        decisions=decisions,
        visitors=visitors,
        temps=list(reversed(temps)),
    )


@router.get("/residents", response_class=HTMLResponse)
def residents(request: Request, svc: Service, page: Session, site: str = "") -> HTMLResponse:
    page.need("residents.manage")
    with svc.engine.connect() as conn:
        rows = rows_of(conn.execute(queries.residents_with_faces(site or None)))
    return render(
        request, "residents.html", page.user, page.csrf, residents=rows, erasures=svc.gate.erasures(site or None)
    )


@router.post("/residents/{resident_id}/{action}")
def resident_action(
    request: Request, svc: Service, page: Session, resident_id: str, action: str, csrf: Csrf = None
) -> RedirectResponse:
    fns = {
        "delete": (lambda: gate_actions.erase_resident(svc, page.user, resident_id, "deleted"), "Resident deleted."),
        "withdraw": (
            lambda: gate_actions.erase_resident(svc, page.user, resident_id, "withdrawn"),
            "Consent withdrawn: faces are being erased.",
        ),
        "consent": (lambda: gate_actions.record_consent(svc, page.user, resident_id), "Consent recorded."),
    }
    fn, ok = fns.get(action, (lambda: (_ for _ in ()).throw(actions.ActionError("unknown action")), ""))
    return act(request, page, csrf, "/console/residents", fn, ok)
