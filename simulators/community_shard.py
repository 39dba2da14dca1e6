"""One share of a district's gateways in its own process: ``python -m simulators.community_shard CONFIG.json``.

A large district (50 gates, 10 towers, 20 elevators) is more than one Python process should hold — each gateway
has its serial links, databases and broker connection, and serial ports cannot be watched past the first
1,024 file descriptors — and on the street each gateway is its own computer anyway. The district splits its
gateways into shares; each share builds its simulated hardware, runs the real agents and the people's traffic,
prints ``ready`` once every agent is up, and stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from simulators.community import Community, CommunitySpec
from simulators.fleet import InProcessAgents, agent_config


def gateway_doc(
    workdir: Path,
    site: str,
    gw: str,
    host: str,
    port: int,
    public_key: str,
    health_s: float,
    units: list[Any],
    document_key: str = "",
) -> dict[str, Any]:
    """One district gateway's agent config (its outbox under ``workdir/agents``, its uplink at host:port)."""
    return agent_config(
        workdir / "agents",
        site=site,
        device=gw,
        host=host,
        port=port,
        public_key=public_key or None,
        document_key=document_key or None,
        health={"interval_s": health_s},
        units=units,
    )


async def run_shard(cfg: dict[str, Any]) -> None:
    community = await asyncio.to_thread(
        Community, CommunitySpec(**cfg["spec"]), Path(cfg["workdir"]) / "hardware", set(cfg["only"])
    )
    fleet: InProcessAgents | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        docs = [
            gateway_doc(
                Path(cfg["workdir"]),
                cfg["site"],
                gw,
                cfg["host"],
                cfg["ports"][gw],
                cfg["public_key"],
                cfg["health_s"],
                units,
                cfg.get("document_key", ""),
            )
            for gw, units in community.units().items()
        ]
        fleet = InProcessAgents(docs)
        await fleet.start()
        print("ready", flush=True)
        if cfg["traffic"]:
            await community.run({a.config.device.id: a for a in fleet.agents}, stop)
        else:
            await stop.wait()
    finally:
        if fleet is not None:
            await fleet.stop()
        community.close()


def main() -> None:
    from civicedge.log import setup_logging

    setup_logging("warning")
    # these gateways stand for other computers: the broker and the cloud on this one come first
    os.nice(5)
    cfg = json.loads(Path(sys.argv[1]).read_text())
    asyncio.run(run_shard(cfg))


if __name__ == "__main__":
    main()
