"""The console's work-order board and work-order page (dispatch, accept, resolve, photos)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse

from cloud import actions
from cloud.api.deps import Service
from cloud.console.app import Csrf, Session, act, raise_forbidden
from cloud.console.render import WO_STATES, render, rows_of
from cloud.ingest.store import now_ms
from cloud.registry.queries import department_names
from cloud.workorders import actions as workorders_actions
from cloud.workorders import queries

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/work-orders", response_class=HTMLResponse)
def work_board(request: Request, svc: Service, page: Session, department: str = "") -> HTMLResponse:
    page.need("workorders.view")
    with svc.engine.connect() as conn:
        rows = rows_of(conn.execute(queries.orders(page.user, department=department or None).limit(500)))
        depts = department_names(conn)
    now = now_ms()
    board: dict[str, list[dict[str, Any]]] = {s: [] for s in WO_STATES}
    for r in rows:
        r["overdue"] = r["state"] not in ("resolved", "closed") and r["due_ms"] < now
        board.setdefault(r["state"], []).append(r)
    return render(
        request, "workorders.html", page.user, page.csrf, board=board, departments=depts, department=department
    )


@router.get("/work-orders/{wo_id}", response_class=HTMLResponse)
def work_order(request: Request, svc: Service, page: Session, wo_id: int) -> HTMLResponse:
    try:
        wo = workorders_actions.work_order(svc, page.user, wo_id)
    except actions.Forbidden as exc:
        raise_forbidden(page, str(exc))
    except actions.NotFound:
        return render(request, "notfound.html", page.user, page.csrf, status=404, what=f"#{wo_id}")
    with svc.engine.connect() as conn:
        depts = department_names(conn)
    wo["overdue"] = wo["state"] not in ("resolved", "closed") and wo["due_ms"] < now_ms()
    return render(request, "workorder.html", page.user, page.csrf, wo=wo, departments=depts)


@router.post("/work-orders/{wo_id}/photo")
async def work_order_photo(
    request: Request,
    svc: Service,
    page: Session,
    wo_id: int,
    stage: Annotated[str, Form()],
    photo: Annotated[UploadFile, File()],
    csrf: Csrf = None,
) -> RedirectResponse:
    data = await photo.read()
    return act(
        request,
        page,
        csrf,
        f"/console/work-orders/{wo_id}",
        lambda: workorders_actions.work_order_photo(svc, page.user, wo_id, stage, data),
        "Photo added.",
    )


@router.post("/work-orders/{wo_id}/{action}")
def work_order_action(
    request: Request,
    svc: Service,
    page: Session,
    wo_id: int,
    action: str,
    note: Annotated[str, Form(max_length=4000)] = "",
    department_id: Annotated[str | None, Form()] = None,
    csrf: Csrf = None,
) -> RedirectResponse:
    return act(
        request,
        page,
        csrf,
        f"/console/work-orders/{wo_id}",
        lambda: workorders_actions.work_order_act(svc, page.user, wo_id, action, note, department_id or None),
        "Work order updated.",
    )
