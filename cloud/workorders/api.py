"""Work orders: open, dispatch, accept, resolve with photos, close or reopen; overdue is visible."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from cloud.api.deps import Conn, CurrentUser, Page, Paging, Service, acting, allow, paged, require_token, run
from cloud.api.models import PhotoAdded, WorkOrder
from cloud.ingest.store import now_ms
from cloud.workorders import actions as workorders_actions
from cloud.workorders import queries

router = APIRouter(prefix="/api/work-orders", dependencies=[Depends(require_token)], tags=["work orders"])


class WorkOrderIn(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=4000)
    priority: Literal["urgent", "high", "normal", "low"] = "normal"
    asset_id: str | None = None
    device_id: str | None = None
    source: Literal["operator", "grid_worker"] = "operator"
    reporter: str = Field(default="", max_length=100)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)


class Act(BaseModel):
    by: str | None = Field(default=None, min_length=1, max_length=64, description="machines: for whom")
    note: str = Field(default="", max_length=4000)
    department_id: str | None = None


@router.post("", status_code=201, response_model=WorkOrder, dependencies=[allow("workorders.report")])
def open_work_order(body: WorkOrderIn, svc: Service, user: CurrentUser) -> dict[str, Any]:
    """Operators open orders; a grid worker's report is recorded as theirs whatever ``reporter`` says."""
    return run(workorders_actions.create_work_order, svc, user, **body.model_dump())  # type: ignore[no-any-return]


@router.get("", response_model=Page, dependencies=[allow("workorders.view")])
def list_work_orders(
    conn: Conn,
    p: Paging,
    user: CurrentUser,
    state: str | None = None,
    department: str | None = None,
    overdue: Annotated[bool, Query(description="only open orders past their SLA")] = False,
) -> Page:
    """Orders this user may see (a department its own, a grid worker its own reports), soonest due first."""
    page = paged(conn, queries.orders(user, state, department, now_ms() if overdue else None), p)
    t = now_ms()
    for item in page.items:
        item["overdue"] = item["state"] not in ("resolved", "closed") and item["due_ms"] < t
    return page


@router.get("/{wo_id}", response_model=WorkOrder)
def get_work_order(wo_id: int, svc: Service, user: CurrentUser) -> dict[str, Any]:
    return run(workorders_actions.work_order, svc, user, wo_id)  # type: ignore[no-any-return]


@router.post("/{wo_id}/photos", status_code=201, response_model=PhotoAdded)
async def add_photo(
    wo_id: int,
    request: Request,
    svc: Service,
    user: CurrentUser,
    stage: Annotated[Literal["before", "after"], Query()],
    by: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
) -> dict[str, Any]:
    """The image is the request body (JPEG, PNG or WebP, ≤ 10 MB); EXIF is stripped, a thumbnail made."""
    data = await request.body()
    return run(workorders_actions.work_order_photo, svc, acting(user, by), wo_id, stage, data)  # type: ignore[no-any-return]


@router.get("/{wo_id}/photos/{photo_id}", response_class=FileResponse)
def get_photo(wo_id: int, photo_id: int, svc: Service, user: CurrentUser, thumb: bool = False) -> FileResponse:
    run(workorders_actions.work_order, svc, user, wo_id)
    try:
        return FileResponse(svc.work_orders.photo_path(wo_id, photo_id, thumb), media_type="image/jpeg")
    except LookupError as exc:
        raise HTTPException(404, detail=str(exc).strip("'")) from None


# declared last: it would otherwise catch /{wo_id}/photos
@router.post("/{wo_id}/{action}", response_model=WorkOrder)
def act(
    wo_id: int,
    action: Literal["dispatch", "accept", "resolve", "close", "reopen"],
    body: Act,
    svc: Service,
    user: CurrentUser,
) -> dict[str, Any]:
    return run(  # type: ignore[no-any-return]
        workorders_actions.work_order_act, svc, acting(user, body.by), wo_id, action, body.note, body.department_id
    )
