"""Phone views: a grid worker reports an issue (photo, location, description) and follows their reports; a
resident answers visitors at the gate and calls their car from a parking tower."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse

from cloud.api.deps import Service
from cloud.console.app import Csrf, Page, Session, act
from cloud.console.render import render, rows_of
from cloud.gate import actions as gate_actions
from cloud.gate import queries as gate_queries
from cloud.parking import actions as parking_actions
from cloud.parking import queries as parking_queries
from cloud.workorders import actions as workorders_actions
from cloud.workorders import queries as work_queries

router = APIRouter(prefix="/console/m", include_in_schema=False)


# --- grid worker -------------------------------------------------------------------------------------------


@router.get("/report", response_class=HTMLResponse)
def report_page(request: Request, svc: Service, page: Session) -> HTMLResponse:
    page.need("workorders.report")
    with svc.engine.connect() as conn:
        mine = work_queries.reported_by(conn, page.user)
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
        wo = workorders_actions.create_work_order(
            svc, page.user, title=title, description=description, lat=lat, lon=lon
        )
        if data:
            workorders_actions.work_order_photo(svc, page.user, wo["id"], "before", data)

    return act(request, page, csrf, "/console/m/report", file_report, "Thank you: your report was filed.")


# --- resident ----------------------------------------------------------------------------------------------


def _resident_view(svc: Any, page: Page) -> dict[str, Any]:
    me = gate_actions.resident_of(svc, page.user)
    svc.gate.expire_requests()
    with svc.engine.connect() as conn:
        visitors = rows_of(conn.execute(gate_queries.flat_visitor_requests(me["site_id"], me["unit"]).limit(10)))
        plates = gate_queries.plates_of(conn, me["site_id"], me["id"])
        towers = parking_queries.towers(conn, me["site_id"])
    return {"me": me, "visitors": visitors, "plates": plates, "towers": towers}


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
        lambda: gate_actions.answer_visitor(svc, page.user, request_id, approved),
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
        lambda: parking_actions.retrieve_car(svc, page.user, tower, plate, "plate"),
        "Your car is on its way to the exit.",
    )
