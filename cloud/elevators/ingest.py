"""Elevator faults: one alarm per (car, fault code), raised and cleared by the car board or monitor."""

from __future__ import annotations

from cloud.ingest.routing import Context, Handler
from protocol import messages as m


def on_fault(ctx: Context, b: m.ElevatorFault) -> None:
    key = f"elevator.{b.car}.{b.code}"
    if not b.active:
        ctx.clear_alarm(key)
        return
    details = {"car": b.car, "entrapment": b.entrapment, "floor": b.floor}
    ctx.raise_alarm(key, b.code, b.severity, b.description or b.code, details)


HANDLERS: dict[type, Handler] = {m.ElevatorFault: on_fault}
