"""The alarm lifecycle, in one place for every source (device messages, rules, operators).

One open alarm per (device, key): a repeat counts an occurrence instead of opening another; raised →
acknowledged (by an operator) → cleared (by the device, a rule or an operator); every step goes to the history.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, bindparam, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from cloud.alarms import tables as alarm_tables

#: the predicate of ``uq_alarms_open`` (written as the index has it, so PostgreSQL infers the index)
OPEN = text("state <> 'cleared'")


class AlarmStateError(ValueError):
    """An operator action the alarm's state does not allow."""


# The statements are built once, their values bound at each call: building a statement with ``.values(...)``
# costs several times its execution (alarms are raised on the ingestion path, by devices and by rules).
_a = alarm_tables.alarms.c
_OPEN_FOR = (_a.device_id == bindparam("d_device"), _a.key == bindparam("d_key"), _a.state != "cleared")
_RAISE = {
    name: dialect.insert(alarm_tables.alarms)
    .on_conflict_do_nothing(index_elements=["device_id", "key"], index_where=OPEN)
    .returning(_a.id)
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))
}
_REPEAT = (
    update(alarm_tables.alarms)
    .where(*_OPEN_FOR)
    .values(
        severity=bindparam("d_severity"),
        message=bindparam("d_message"),
        details=bindparam("d_details", type_=alarm_tables.alarms.c.details.type),
        last_seen_ms=bindparam("d_at"),
        occurrences=_a.occurrences + 1,
    )
    .returning(_a.id)
)
_OPEN_IDS = select(_a.id).where(*_OPEN_FOR)
_CLEAR = (
    update(alarm_tables.alarms)
    .where(_a.id.in_(bindparam("d_ids", expanding=True)))
    .values(state="cleared", cleared_ms=bindparam("d_at"), cleared_by=bindparam("d_by"))
)
_HISTORY = alarm_tables.alarm_history.insert()


def _history(conn: Connection, alarm_id: int, at: int, action: str, by: str, note: str) -> None:
    conn.execute(_HISTORY, {"alarm_id": alarm_id, "at_ms": at, "action": action, "by": by, "note": note[:500]})


def raise_alarm(
    conn: Connection,
    *,
    device: str,
    key: str,
    code: str,
    severity: str,
    message: str,
    details: dict[str, Any],
    at: int,
    msg_id: str,
    by: str,
) -> int:
    """Open the alarm, or count a repeat of the open one; return its id. Safe when several processes raise the
    same alarm at once: the database keeps one open alarm per (device, key) (``uq_alarms_open``), and whoever
    loses the race counts a repeat."""
    row = {
        "device_id": device,
        "key": key,
        "code": code,
        "severity": severity,
        "message": message,
        "details": details,
        "state": "active",
        "raised_ms": at,
        "last_seen_ms": at,
        "msg_id": msg_id,
        "occurrences": 1,
    }
    repeat = {
        "d_device": device,
        "d_key": key,
        "d_severity": severity,
        "d_message": message,
        "d_details": details,
        "d_at": at,
    }
    for _ in range(3):
        new = conn.execute(_RAISE[conn.dialect.name], row).first()
        if new is not None:
            alarm_id = int(new.id)
            _history(conn, alarm_id, at, "raised", by, message)
            return alarm_id
        open_ = conn.execute(_REPEAT, repeat).first()
        if open_ is not None:
            _history(conn, int(open_.id), at, "repeated", by, message)
            return int(open_.id)
        # cleared between the two statements by someone else: raise it again
    raise RuntimeError(f"alarm {device}/{key} changed state too often to be raised")


def clear_alarm(conn: Connection, *, device: str, key: str, at: int, by: str, note: str = "") -> list[int]:
    """Clear the open alarm for (device, key), if any; return the ids cleared."""
    ids = [int(r.id) for r in conn.execute(_OPEN_IDS, {"d_device": device, "d_key": key})]
    if ids:
        conn.execute(_CLEAR, {"d_ids": ids, "d_at": at, "d_by": by})
        for i in ids:
            _history(conn, i, at, "cleared", by, note)
    return ids


def operator_action(conn: Connection, alarm_id: int, action: str, by: str, note: str, at: int) -> dict[str, Any]:
    """``acknowledged`` or ``cleared`` by an operator; LookupError if there is no such alarm."""
    a = alarm_tables.alarms.c
    row = conn.execute(select(alarm_tables.alarms).where(a.id == alarm_id)).first()
    if row is None:
        raise LookupError(f"no alarm {alarm_id}")
    if row.state == "cleared":
        raise AlarmStateError(f"alarm {alarm_id} is already cleared")
    if action == "acknowledged":
        if row.state == "acknowledged":
            raise AlarmStateError(f"alarm {alarm_id} was acknowledged by {row.acked_by}")
        conn.execute(
            update(alarm_tables.alarms).where(a.id == alarm_id).values(state="acknowledged", acked_ms=at, acked_by=by)
        )
    else:
        conn.execute(
            update(alarm_tables.alarms).where(a.id == alarm_id).values(state="cleared", cleared_ms=at, cleared_by=by)
        )
    _history(conn, alarm_id, at, action, by, note)
    return dict(conn.execute(select(alarm_tables.alarms).where(a.id == alarm_id)).one()._mapping)
