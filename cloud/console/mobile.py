"""Phone views: a grid worker reports an issue (photo, location, description) and follows their reports; a
resident answers visitors at the gate and calls their car from a parking tower."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy import select

from cloud import actions
from cloud.api.deps import Service
from cloud.auth.scope import work_order_filter
from cloud.console.app import Page, Session, act
from cloud.console.render import render
from cloud.db import schema as t
from cloud.db import schema_gate as g
from cloud.db.schema_workorders import work_orders

router = APIRouter(prefix="/console/m", include_in_schema=False)
Csrf = Annotated[str | None, Form()]


# --- grid worker -------------------------------------------------------------------------------------------


@router.get("/report", response_class=HTMLResponse)
def report_page(request: Request, svc: Service, page: Session) -> HTMLResponse:
    page.need("workorders.report")
    c = work_orders.c
    with svc.engine.connect() as conn:
        mine = [
            dict(r._mapping)
            for r in conn.execute(
                select(work_orders)
                .where(work_order_filter(page.user), c.reporter == page.user.username)
                .order_by(c.created_ms.desc())
                .limit(30)
            )
        ]
    return render(request, "m_report.html", page.user, page.csrf, reports=mine)


@router.post("/report")
async def report(
    request: Request,
    svc: Service,
    page: Session,
    title: Annotated[str, Form(min_length=1, max_length=200)],
    description: Annotated[str, Form(max_length=4000)] = "",
    lat: Annotated[float | None, Form(ge=-90, le=90)] = None,
    lon: Annotated[float | None, Form(ge=-180, le=180)] = None,
    photo: Annotated[UploadFile | None, File()] = None,
    csrf: Csrf = None,
) -> RedirectResponse:
    data = await photo.read() if photo is not None and photo.filename else b""

    def file_report() -> None:
        wo = actions.create_work_order(svc, page.user, title=title, description=description, lat=lat, lon=lon)
        if data:
            actions.work_order_photo(svc, page.user, wo["id"], "before", data)

    return act(request, page, csrf, "/console/m/report", file_report, "Thank you: your report was filed.")


# --- resident ----------------------------------------------------------------------------------------------


def _resident_view(svc: Any, page: Page) -> dict[str, Any]:
    me = actions.resident_of(svc, page.user)
    svc.gate.expire_requests()
    v = g.visitor_requests.c
    with svc.engine.connect() as conn:
        visitors = [
            dict(r._mapping)
            for r in conn.execute(
                select(g.visitor_requests)
                .where(v.site_id == me["site_id"], v.unit == me["unit"])
                .order_by(v.created_ms.desc())
                .limit(10)
            )
        ]
        plates = [
            r[0]
            for r in conn.execute(
                select(g.plates.c.plate).where(g.plates.c.site_id == me["site_id"], g.plates.c.holder == me["id"])
            )
        ]
        c = t.messages.c
        towers = [
            r[0]
            for r in conn.execute(
                select(c.device_id).where(c.site_id == me["site_id"], c.type == "lift.status").distinct()
            )
        ]
    return {"me": me, "visitors": visitors, "plates": plates, "towers": sorted(towers)}


@router.get("/home", response_class=HTMLResponse)
def home(request: Request, svc: Service, page: Session) -> HTMLResponse:
    page.need("visitors.answer")
    return render(request, "m_home.html", page.user, page.csrf, **_resident_view(svc, page))


@router.get("/visitors", response_class=HTMLResponse)
def visitors_fragment(request: Request, svc: Service, page: Session) -> HTMLResponse:
    """The visitor list alone (the home page refreshes it every few seconds)."""
    page.need("visitors.answer")
    return render(request, "_visitors.html", page.user, page.csrf, **_resident_view(svc, page))


@router.post("/visitors/{request_id}/{answer}")
def answer(
    request: Request, svc: Service, page: Session, request_id: str, answer: str, csrf: Csrf = None
) -> RedirectResponse:
    approved = answer == "approve"
    return act(
        request,
        page,
        csrf,
        "/console/m/home",
        lambda: actions.answer_visitor(svc, page.user, request_id, approved),
        "The gate is opening for your visitor." if approved else "The visitor was turned away.",
    )


@router.post("/retrieve")
def retrieve(
    request: Request,
    svc: Service,
    page: Session,
    tower: Annotated[str, Form()],
    plate: Annotated[str, Form()],
    csrf: Csrf = None,
) -> RedirectResponse:
    return act(
        request,
        page,
        csrf,
        "/console/m/home",
        lambda: actions.retrieve_car(svc, page.user, tower, plate, "plate"),
        "Your car is on its way to the exit.",
    )
