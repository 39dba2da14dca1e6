"""The alarms' REST API: list, acknowledge, clear, history."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from cloud.alarms import actions as alarms_actions
from cloud.alarms import queries
from cloud.api.deps import (
    Conn,
    CurrentUser,
    Page,
    Paging,
    Service,
    acting,
    allow,
    paged,
    require_token,
    run,
)
from cloud.api.models import (
    Alarm,
    AlarmHistoryEntry,
)

router = APIRouter(prefix="/api", dependencies=[Depends(require_token)])


@router.get("/alarms", response_model=Page, tags=["alarms"], dependencies=[allow("alarms.view")])
def alarms(
    conn: Conn,
    p: Paging,
    user: CurrentUser,
    state: Literal["open", "active", "acknowledged", "cleared"] | None = None,
    device: str | None = None,
) -> Page:
    """Alarms, newest first; ``open`` = active or acknowledged."""
    return paged(conn, queries.alarms(user, state, device), p)


class AlarmAction(BaseModel):
    by: str = Field(min_length=1, max_length=64, description="who (operator name; the audit log keeps 64 characters)")
    note: str = Field(default="", max_length=1000)


def _alarm_action(svc: Service, user: CurrentUser, alarm_id: int, action: str, body: AlarmAction) -> dict[str, Any]:
    return run(alarms_actions.alarm_act, svc, acting(user, body.by), alarm_id, action, body.note)  # type: ignore[no-any-return]


@router.post("/alarms/{alarm_id}/ack", response_model=Alarm, tags=["alarms"], dependencies=[allow("alarms.act")])
def ack_alarm(alarm_id: int, body: AlarmAction, svc: Service, user: CurrentUser) -> dict[str, Any]:
    """Acknowledge: an operator has seen it and owns it; it stays open until cleared."""
    return _alarm_action(svc, user, alarm_id, "acknowledged", body)


@router.post("/alarms/{alarm_id}/clear", response_model=Alarm, tags=["alarms"], dependencies=[allow("alarms.act")])
def clear_alarm(alarm_id: int, body: AlarmAction, svc: Service, user: CurrentUser) -> dict[str, Any]:
    """Clear by hand (devices clear their own alarms with ``alarm.clear``)."""
    return _alarm_action(svc, user, alarm_id, "cleared", body)


@router.get(
    "/alarms/{alarm_id}/history",
    response_model=list[AlarmHistoryEntry],  # type: ignore[valid-type]
    tags=["alarms"],
    dependencies=[allow("alarms.view")],
)
def alarm_history(alarm_id: int, conn: Conn, user: CurrentUser) -> list[dict[str, Any]]:
    if queries.alarm(conn, user, alarm_id) is None:
        raise HTTPException(404, detail=f"no alarm {alarm_id}")
    return queries.history(conn, alarm_id)
