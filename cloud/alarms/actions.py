"""What operators do with alarms: acknowledge, clear."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from cloud import events
from cloud.actions import Conflict, NotFound, need
from cloud.alarms import tables as alarm_tables
from cloud.alarms.lifecycle import AlarmStateError, operator_action
from cloud.auth.scope import alarm_filter
from cloud.auth.service import User
from cloud.ingest.store import now_ms

if TYPE_CHECKING:
    from cloud.service import CloudService


def alarm_act(svc: CloudService, user: User, alarm_id: int, action: str, note: str = "") -> dict[str, Any]:
    """``acknowledged`` or ``cleared`` by a person; department users only on their own department's alarms."""
    need(user, "alarms.act")
    try:
        with svc.engine.begin() as conn:
            if (
                conn.execute(
                    select(alarm_tables.alarms.c.id).where(alarm_tables.alarms.c.id == alarm_id, alarm_filter(user))
                ).first()
                is None
            ):
                raise NotFound(f"no alarm {alarm_id}")
            row = operator_action(conn, alarm_id, action, user.username, note, now_ms())
    except LookupError as exc:
        raise NotFound(str(exc)) from None
    except AlarmStateError as exc:
        raise Conflict(str(exc)) from None
    svc.auth.audit(user.username, f"alarm.{action}", str(alarm_id), {"note": note} if note else None)
    svc.stream.publish([events.AlarmChanged(alarm_id, row["device_id"], None, action)])
    return row
