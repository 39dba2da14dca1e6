"""A device's progress through an update (the rollout runner advances on it after commit)."""

from __future__ import annotations

from cloud.events import UpdateReported
from cloud.ingest.routing import Context, Handler
from protocol import messages as m


def on_status(ctx: Context, b: m.UpdateStatus) -> None:
    ctx.events.append(UpdateReported(ctx.device, b.rollout, b.state, b.reason, b.detail))


HANDLERS: dict[type, Handler] = {m.UpdateStatus: on_status}
