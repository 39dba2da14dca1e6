"""The live events the console receives, one builder per kind, whoever raises them (ingestion, the rules, an
operator): an alarm raised by a rule reaches the consoles exactly as one a device raised. They are published
after the transaction that stored what they describe has committed (``CloudService.publish_live`` labels them
with the owning department and confidentiality)."""

from __future__ import annotations

from typing import Any

Event = dict[str, Any]


def alarm_raised(
    alarm_id: int, *, device: str, site: str | None, code: str, severity: str, message: str, at_ms: int
) -> Event:
    return {
        "kind": "alarm",
        "event": "raised",
        "id": alarm_id,
        "device_id": device,
        "site_id": site,
        "code": code,
        "severity": severity,
        "message": message,
        "at_ms": at_ms,
    }


def alarm_cleared(alarm_id: int, *, device: str, at_ms: int) -> Event:
    return {"kind": "alarm", "event": "cleared", "id": alarm_id, "device_id": device, "at_ms": at_ms}


def work_order(wo: dict[str, Any], event: str) -> Event:
    return {
        "kind": "workorder",
        "event": event,
        "id": wo["id"],
        "state": wo["state"],
        "title": wo["title"],
        "department_id": wo["department_id"],
        "asset_id": wo.get("asset_id"),
    }
