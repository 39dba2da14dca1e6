"""The alarm lifecycle, in one place for every source (device messages, rules, operators).

One open alarm per (device, key): a repeat counts an occurrence instead of opening another; raised →
acknowledged (by an operator) → cleared (by the device, a rule or an operator); every step goes to the history.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from cloud.alarms import tables as alarm_tables

#: the predicate of ``uq_alarms_open`` (written as the index has it, so PostgreSQL infers the index)
OPEN = text("state <> 'cleared'")


def _insert(conn: Connection) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(alarm_tables.alarms)


class AlarmStateError(ValueError):
    """An operator action the alarm's state does not allow."""


def _history(conn: Connection, alarm_id: int, at: int, action: str, by: str, note: str) -> None:
    conn.execute(
        alarm_tables.alarm_history.insert().values(alarm_id=alarm_id, at_ms=at, action=action, by=by, note=note[:500])
    )


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
    a = alarm_tables.alarms.c
    for _ in range(3):
        new = conn.execute(
            _insert(conn)
            .values(
                device_id=device,
                key=key,
                code=code,
                severity=severity,
                message=message,
                details=details,
                state="active",
                raised_ms=at,
                last_seen_ms=at,
                msg_id=msg_id,
                occurrences=1,
            )
            .on_conflict_do_nothing(index_elements=["device_id", "key"], index_where=OPEN)
            .returning(a.id)
        ).first()
        if new is not None:
            alarm_id = int(new.id)
            _history(conn, alarm_id, at, "raised", by, message)
            return alarm_id
        open_ = conn.execute(
            update(alarm_tables.alarms)
            .where(a.device_id == device, a.key == key, a.state != "cleared")
            .values(severity=severity, message=message, details=details, last_seen_ms=at, occurrences=a.occurrences + 1)
            .returning(a.id)
        ).first()
        if open_ is not None:
            _history(conn, int(open_.id), at, "repeated", by, message)
            return int(open_.id)
        # cleared between the two statements by someone else: raise it again
    raise RuntimeError(f"alarm {device}/{key} changed state too often to be raised")


def clear_alarm(conn: Connection, *, device: str, key: str, at: int, by: str, note: str = "") -> list[int]:
    """Clear the open alarm for (device, key), if any; return the ids cleared."""
    a = alarm_tables.alarms.c
    ids = [
        int(r.id) for r in conn.execute(select(a.id).where(a.device_id == device, a.key == key, a.state != "cleared"))
    ]
    if ids:
        conn.execute(
            update(alarm_tables.alarms).where(a.id.in_(ids)).values(state="cleared", cleared_ms=at, cleared_by=by)
        )
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
