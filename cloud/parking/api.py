"""Parking towers: a driver's retrieve request (from a phone), tower status and request history."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from cloud.api.deps import Conn, CurrentUser, DeviceId, Page, Paging, Service, allow, paged, require_token, run
from cloud.api.models import CommandSent, TowerStatus
from cloud.parking import actions as parking_actions
from cloud.parking import queries

router = APIRouter(prefix="/api/parking", dependencies=[Depends(require_token)], tags=["parking"])


class RetrieveIn(BaseModel):
    subject: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    by: Literal["face", "plate", "ticket"] = "ticket"


@router.post(
    "/{device_id}/retrieve", status_code=202, response_model=CommandSent, dependencies=[allow("parking.retrieve")]
)
def retrieve(device_id: DeviceId, body: RetrieveIn, svc: Service, user: CurrentUser) -> dict[str, Any]:
    """Ask the tower for a car (a resident: one of their own plates); the answer (request id, ETA) comes back
    as the command's acknowledgement and the ``lift.request`` / ``lift.result`` events."""
    return run(parking_actions.retrieve_car, svc, user, device_id, body.subject, body.by)  # type: ignore[no-any-return]


@router.get(
    "/{device_id}/status",
    response_model=TowerStatus,
    response_model_exclude_unset=True,  # a lift reports position_mm only if it knows it
    dependencies=[allow("parking.view")],
)
def status(device_id: DeviceId, conn: Conn) -> dict[str, Any]:
    """The newest ``lift.status`` of each lift of the tower."""
    return {"device_id": device_id, "lifts": queries.lifts(conn, device_id)}


@router.get("/{device_id}/requests", response_model=Page, dependencies=[allow("parking.view")])
def requests(device_id: DeviceId, conn: Conn, p: Paging) -> Page:
    """Requests and their results, newest first (``lift.request`` and ``lift.result`` events)."""
    return paged(conn, queries.requests(device_id), p)
