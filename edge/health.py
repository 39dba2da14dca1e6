"""Heartbeat: every ``health.interval_s`` the agent puts a ``health`` message on the telemetry lane."""

from __future__ import annotations

import os
import shutil
import time
from typing import TYPE_CHECKING

import psutil

from protocol.messages import Health

if TYPE_CHECKING:
    from edge.agent import Agent


def snapshot(agent: Agent) -> Health:
    ob = agent.outbox
    try:
        disk_free: int | None = shutil.disk_usage(ob.path.parent).free
    except OSError:
        disk_free = None
    return Health(
        uptime_s=round(time.monotonic() - agent.started_monotonic, 3),
        agent_version=agent.version,
        kind=agent.config.device.kind,
        cpu_load=round(os.getloadavg()[0], 3),
        mem_rss_bytes=psutil.Process().memory_info().rss,
        disk_free_bytes=disk_free,
        outbox_depth=ob.depth(),
        outbox_bytes=ob.used_bytes,
        shed=ob.shed_counts(),
        refused=ob.refused_counts(),
        storage=ob.storage,
        last_publish_ts=agent.uplink.last_publish_ms if agent.uplink else None,
    )
