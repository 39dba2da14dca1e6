"""``civicedge chaos …``: fault scenarios that print one JSON object and fail on any loss."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated

import typer

app = typer.Typer(
    help="Fault scenarios against real processes (broker restarts, kill -9, network cuts).", no_args_is_help=True
)


def _progress(quiet: bool) -> object:
    return None if quiet else (lambda m: print(m, file=sys.stderr, flush=True))


@app.command()
def edge(
    duration: Annotated[float, typer.Option(help="seconds of traffic")] = 30.0,
    rate: Annotated[float, typer.Option(help="events per second")] = 200.0,
    json_out: Annotated[bool, typer.Option("--json", help="print only the JSON report on stdout")] = False,
) -> None:
    """Broker restarts, agent kill -9 and a network cut during a steady stream; exit 1 if anything is lost."""
    from simulators.chaos import edge_scenario

    report = asyncio.run(edge_scenario(duration, rate, progress=_progress(False)))  # type: ignore[arg-type]
    print(json.dumps(report, indent=None if json_out else 2))
    raise typer.Exit(1 if report["lost"] > 0 else 0)


@app.command()
def budget(
    alarms: Annotated[int, typer.Option(help="alarms raised while offline")] = 200,
    readings: Annotated[int, typer.Option(help="telemetry readings produced while offline")] = 20_000,
    budget_bytes: Annotated[int, typer.Option(help="outbox storage budget")] = 256 * 1024,
    json_out: Annotated[bool, typer.Option("--json", help="print only the JSON report on stdout")] = False,
) -> None:
    """Offline gateway with a small disk budget: every alarm arrives, telemetry is shed and counted."""
    from simulators.chaos import budget_scenario

    report = asyncio.run(budget_scenario(alarms, readings, budget_bytes, progress=_progress(False)))  # type: ignore[arg-type]
    print(json.dumps(report, indent=None if json_out else 2))
    raise typer.Exit(0 if report["alarms_lost"] == 0 and report["accounted"] else 1)


sim_app = typer.Typer(help="Simulators: the demo, fleets of devices.", no_args_is_help=True)


@sim_app.command()
def demo(
    port: Annotated[int, typer.Option(help="cloud HTTP port (a free one is picked if busy)")] = 8000,
    gateways: Annotated[int, typer.Option(help="extra plain gateways (a ticker unit) besides the gate and tower")] = 0,
    covers: Annotated[int, typer.Option(help="manhole covers in the demo district (0: none)")] = 300,
) -> None:
    """Broker + cloud + simulated gateways and a small district on this machine, until Ctrl-C."""
    from simulators.demo import run_demo

    run_demo(port=port, gateways=gateways, covers=covers)


@sim_app.command()
def district(
    cloud: Annotated[str, typer.Option(envvar="CE_CLOUD_URL", help="the cloud's address")] = "http://127.0.0.1:8000",
    token: Annotated[str | None, typer.Option(envvar="CE_API_TOKEN", help="API token (CE_API_TOKENS)")] = None,
    broker: Annotated[str, typer.Option(help="mqtt://host:port the nodes publish to")] = "mqtt://127.0.0.1:1883",
    covers: Annotated[int, typer.Option(help="manhole covers")] = 16_000,
    cells: Annotated[int, typer.Option(help="grid cells")] = 1191,
    site: Annotated[str, typer.Option(help="site id")] = "district",
    speed: Annotated[float, typer.Option(help="district seconds per real second")] = 1.0,
    fault_every_s: Annotated[float, typer.Option(help="a random fault this often (district time; 0: none)")] = 600,
    register_first: Annotated[bool, typer.Option("--register/--no-register", help="register the district")] = True,
) -> None:
    """Run a district of manhole covers against a running cloud and broker until Ctrl-C: registers departments,
    grid cells, the registry CSV and the nodes' devices, then the nodes report and faults happen."""
    import signal
    from urllib.parse import urlparse

    import httpx

    from simulators.district import CoverFleet, DistrictSpec, generate, register

    d = generate(DistrictSpec(covers=covers, cells=cells, site=site))
    if register_first:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with httpx.Client(base_url=cloud, headers=headers, timeout=60) as api:
            try:
                register(d, api, progress=lambda m: typer.echo(f"  {m}"))
            except (httpx.HTTPError, RuntimeError) as exc:
                typer.echo(f"error: registering the district at {cloud} failed: {exc}", err=True)
                raise typer.Exit(2) from None
    u = urlparse(broker)
    fleet = CoverFleet(d, u.hostname or "127.0.0.1", u.port or 1883, speed=speed, fault_every_s=fault_every_s or None)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        typer.echo(f"{covers} covers reporting at {speed:g}× to {broker}; Ctrl-C stops")
        await fleet.run(stop)
        typer.echo(f"stopped after {fleet.sent} messages")

    asyncio.run(run())
