"""Ingestion as a routing table: each message body type → the handlers of the domains that own it.

A handler runs inside the batch's transaction with a :class:`Context` (the connection, the device and site the
topic names, the envelope) and the decoded body. It writes what its domain keeps, adds readings for the
telemetry table, and returns nothing: what happened goes into ``ctx.events`` as typed domain events
(:mod:`cloud.events`), which the node publishes after the batch commits. The table itself is assembled in
:mod:`cloud.ingest.routes` from each domain's ``HANDLERS``; a body type no domain handles is simply logged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from cloud.alarms.lifecycle import clear_alarm, raise_alarm
from cloud.events import AlarmChanged, AlarmRaised, DomainEvent
from protocol.envelope import Envelope

Reading = tuple[str, str, int, float, str | None, str]  # device, metric, ts, value, unit, msg_id


@dataclass(slots=True)
class Context:
    conn: Connection
    site: str
    device: str
    env: Envelope
    received_ms: int
    insert: Callable[[Any], Any]  # the dialect's INSERT (for ON CONFLICT)
    readings: list[Reading]
    events: list[DomainEvent]

    def reading(self, metric: str, value: float, ts: int | None = None, unit: str | None = None) -> None:
        self.readings.append((self.device, metric, self.env.ts if ts is None else ts, float(value), unit, self.env.id))

    def raise_alarm(self, key: str, code: str, severity: str, message: str, details: dict[str, Any]) -> None:
        """The device's own alarm (repeats counted on the open one)."""
        alarm_id = raise_alarm(
            self.conn,
            device=self.device,
            key=key,
            code=code,
            severity=severity,
            message=message,
            details=details,
            at=self.received_ms,
            msg_id=self.env.id,
            by="device",
        )
        self.events.append(AlarmRaised(alarm_id, self.device, self.site, code, severity, message, self.received_ms))

    def clear_alarm(self, key: str) -> None:
        for alarm_id in clear_alarm(self.conn, device=self.device, key=key, at=self.received_ms, by="device"):
            self.events.append(AlarmChanged(alarm_id, self.device, self.received_ms, "cleared"))


Handler = Callable[[Context, Any], None]
#: how a body is kept in the message log when not as it came (data kept elsewhere, or never kept)
LogBody = Callable[[Any], dict[str, Any]]
