"""Work orders: open, dispatch, accept, resolve with photos, close or reopen; overdue is visible."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from cloud.api.deps import Conn, Page, Paging, Service, paged, require_token
from cloud.db.schema_workorders import work_orders
from cloud.ingest.store import now_ms
from cloud.workorders.service import WorkOrderError

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
    by: str = Field(min_length=1, max_length=100)
    note: str = Field(default="", max_length=4000)
    department_id: str | None = None


def _wrap(fn: Any, *args: Any, **kw: Any) -> dict[str, Any]:
    try:
        return fn(*args, **kw)  # type: ignore[no-any-return]
    except LookupError as exc:
        raise HTTPException(404, detail=str(exc).strip("'")) from None
    except WorkOrderError as exc:
        raise HTTPException(409, detail=str(exc)) from None


@router.post("", status_code=201)
def open_work_order(body: WorkOrderIn, svc: Service) -> dict[str, Any]:
    try:
        return svc.work_orders.create(**body.model_dump())
    except WorkOrderError as exc:
        raise HTTPException(422, detail=str(exc)) from None


@router.get("", response_model=Page)
def list_work_orders(
    conn: Conn,
    p: Paging,
    state: str | None = None,
    department: str | None = None,
    overdue: Annotated[bool, Query(description="only open orders past their SLA")] = False,
) -> Page:
    c = work_orders.c
    q = select(work_orders).order_by(c.due_ms)
    if state:
        q = q.where(c.state == state)
    if department:
        q = q.where(c.department_id == department)
    if overdue:
        q = q.where(c.due_ms < now_ms(), c.state.not_in(["resolved", "closed"]))
    page = paged(conn, q, p)
    t = now_ms()
    for item in page.items:
        item["overdue"] = item["state"] not in ("resolved", "closed") and item["due_ms"] < t
    return page


@router.get("/{wo_id}")
def get_work_order(wo_id: int, svc: Service) -> dict[str, Any]:
    return _wrap(svc.work_orders.get, wo_id)


@router.post("/{wo_id}/photos", status_code=201)
async def add_photo(
    wo_id: int,
    request: Request,
    svc: Service,
    stage: Annotated[Literal["before", "after"], Query()],
    by: Annotated[str, Query(min_length=1, max_length=100)],
) -> dict[str, Any]:
    """The image is the request body (JPEG, PNG or WebP, ≤ 10 MB); EXIF is stripped, a thumbnail made."""
    data = await request.body()
    try:
        return svc.work_orders.add_photo(wo_id, stage, data, by)
    except LookupError as exc:
        raise HTTPException(404, detail=str(exc).strip("'")) from None
    except WorkOrderError as exc:
        raise HTTPException(422, detail=str(exc)) from None


@router.get("/{wo_id}/photos/{photo_id}", response_class=FileResponse)
def get_photo(wo_id: int, photo_id: int, svc: Service, thumb: bool = False) -> FileResponse:
    try:
        return FileResponse(svc.work_orders.photo_path(wo_id, photo_id, thumb), media_type="image/jpeg")
    except LookupError as exc:
        raise HTTPException(404, detail=str(exc).strip("'")) from None


# declared last: it would otherwise catch /{wo_id}/photos
@router.post("/{wo_id}/{action}")
def act(
    wo_id: int, action: Literal["dispatch", "accept", "resolve", "close", "reopen"], body: Act, svc: Service
) -> dict[str, Any]:
    return _wrap(svc.work_orders.act, wo_id, action, body.by, body.note, body.department_id)
