"""The cloud's domain events and the one stream they travel on.

Whoever changes something — ingestion, the rules, an operator — describes it as a typed event and publishes it
on the node's :class:`EventStream` **after** the transaction that stored it has committed. Live push, the gate
sync, update rollouts, provisioning, the rules and the time-series export subscribe to the kinds they need;
an alarm raised by a rule therefore reaches the consoles exactly as one a device raised.

``live()`` is what a console receives for an event (``None``: nothing to show); the live channel labels it
with the owning department and confidentiality (``CloudService.publish_live``) and sends it to every node.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cloud.metrics import Metrics

log = logging.getLogger("civicedge.cloud.events")
Event = dict[str, Any]  # what a console receives


class DomainEvent:
    """Something that happened, stored and committed."""

    __slots__ = ()

    def live(self) -> Event | None:
        return None


@dataclass(frozen=True, slots=True)
class AlarmRaised(DomainEvent):
    alarm_id: int
    device: str
    site: str | None
    code: str
    severity: str
    message: str
    at_ms: int

    def live(self) -> Event:
        return {
            "kind": "alarm",
            "event": "raised",
            "id": self.alarm_id,
            "device_id": self.device,
            "site_id": self.site,
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "at_ms": self.at_ms,
        }


@dataclass(frozen=True, slots=True)
class AlarmChanged(DomainEvent):
    """Cleared (by the device, a rule or an operator) or acknowledged (by an operator)."""

    alarm_id: int
    device: str
    at_ms: int | None = None
    event: str = "cleared"

    def live(self) -> Event:
        ev: Event = {"kind": "alarm", "event": self.event, "id": self.alarm_id, "device_id": self.device}
        if self.at_ms is not None:
            ev["at_ms"] = self.at_ms
        return ev


@dataclass(frozen=True, slots=True)
class DeviceStatus(DomainEvent):
    device: str
    status: str
    site: str | None = None

    def live(self) -> Event:
        ev: Event = {"kind": "device", "device_id": self.device, "status": self.status}
        if self.site is not None:
            ev["site_id"] = self.site
        return ev


@dataclass(frozen=True, slots=True)
class GateDecided(DomainEvent):
    device: str
    site: str
    decision: str
    reason: str | None
    temperature_c: float | None
    at_ms: int

    def live(self) -> Event:
        return {
            "kind": "gate",
            "device_id": self.device,
            "site_id": self.site,
            "decision": self.decision,
            "reason": self.reason,
            "temperature_c": self.temperature_c,
            "at_ms": self.at_ms,
        }


@dataclass(frozen=True, slots=True)
class VisitorArrived(DomainEvent):
    device: str
    site: str
    unit: str

    def live(self) -> Event:
        return {"kind": "visitor", "device_id": self.device, "site_id": self.site, "unit": self.unit}


@dataclass(frozen=True, slots=True)
class WorkOrderChanged(DomainEvent):
    order: dict[str, Any] = field(hash=False, compare=False)
    event: str = "created"

    def live(self) -> Event:
        wo = self.order
        return {
            "kind": "workorder",
            "event": self.event,
            "id": wo["id"],
            "state": wo["state"],
            "title": wo["title"],
            "department_id": wo["department_id"],
            "asset_id": wo.get("asset_id"),
        }


@dataclass(frozen=True, slots=True)
class CommandAcked(DomainEvent):
    device: str
    cid: str
    status: str


@dataclass(frozen=True, slots=True)
class UpdateReported(DomainEvent):
    device: str
    rollout: str
    state: str
    reason: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class FaceEnrolled(DomainEvent):
    """A face enrolled at a gate by an operator: the embedding goes to the vault, never the message log."""

    resident_id: str
    embedding_b64: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class SyncReported(DomainEvent):
    """A gate or barrier reported (or asked again for) the revision of its gallery or allow-list."""

    site: str
    device: str
    what: str  # gallery | allowlist
    revision: int
    nonce: str | None
    answer: bool  # a status or resync (answered); an "applied" report is only recorded


@dataclass(frozen=True, slots=True)
class BatchStored(DomainEvent):
    """What one ingestion batch stored, for the rules and the time-series export."""

    #: (device, metric, ts, value, unit, msg_id)
    readings: list[tuple[str, str, int, float, str | None, str]] = field(hash=False, compare=False)
    #: new messages other than telemetry batches: (site, device, type, body, received_ms)
    messages: list[tuple[str, str, str, dict[str, Any], int]] = field(hash=False, compare=False)
    #: time-series points: (site, device, metric, value, ts)
    points: list[tuple[str, str, str, float, int]] = field(hash=False, compare=False)


E = TypeVar("E", bound=DomainEvent)


class EventStream:
    """In-process publish/subscribe by event type. Subscribers are called in the order they subscribed, each
    with the batch's events of its type; one that fails is logged and counted and the others still run."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics or Metrics()
        self._subs: list[tuple[type[DomainEvent], Callable[[list[Any]], None], str]] = []
        self._lock = threading.Lock()

    def subscribe(self, kind: type[E], handler: Callable[[list[E]], None], name: str = "") -> None:
        with self._lock:
            self._subs.append((kind, handler, name or getattr(handler, "__qualname__", "subscriber")))

    def publish(self, events: Sequence[DomainEvent]) -> None:
        if not events:
            return
        for kind, handler, name in list(self._subs):
            mine = [e for e in events if isinstance(e, kind)]
            if not mine:
                continue
            try:
                handler(mine)
            except Exception:
                self.metrics.inc(
                    "ce_event_subscriber_errors_total", 1, "event subscribers that failed", subscriber=name
                )
                log.exception("event subscriber failed", extra={"subscriber": name})
