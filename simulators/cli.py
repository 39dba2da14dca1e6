"""``civicedge chaos …``: fault scenarios that print one JSON object and fail on any loss."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    help="Fault scenarios against real processes (broker restarts, kill -9, network cuts, hostile devices).",
    no_args_is_help=True,
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


@app.command()
def cloud(
    duration: Annotated[float, typer.Option(help="seconds of traffic")] = 20.0,
    rate: Annotated[float, typer.Option(help="messages per second, valid and hostile together")] = 300.0,
    devices: Annotated[int, typer.Option(help="devices the stream comes from")] = 50,
    hostile_share: Annotated[float, typer.Option(help="share of hostile messages (0-1)", min=0, max=1)] = 0.1,
    database_url: Annotated[
        str | None, typer.Option(help="an empty database to use (default: SQLite in a temporary folder)")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="print only the JSON report on stdout")] = False,
) -> None:
    """A stream from many devices with hostile messages of every kind mixed in, through a real Mosquitto to a
    cloud node; exit 1 if a valid message is lost or ingestion is still stalled at the end."""
    from simulators.cloud_chaos import cloud_scenario

    report = cloud_scenario(duration, rate, devices, hostile_share, database_url, progress=_progress(json_out))  # type: ignore[arg-type]
    print(json.dumps(report, indent=None if json_out else 2))
    raise typer.Exit(1 if report["lost"] > 0 or report["stalled_at_end"] else 0)


sim_app = typer.Typer(help="Simulators: the demo, fleets of devices.", no_args_is_help=True)


@sim_app.command()
def demo(
    port: Annotated[int, typer.Option(help="cloud HTTP port (a free one is picked if busy)")] = 8000,
    district: Annotated[
        str, typer.Option(help="small: 300 covers, a gate, a tower, an elevator; full: 16,000 covers, 50 gates, …")
    ] = "small",
    gateways: Annotated[int, typer.Option(help="extra plain gateways (a ticker unit) for load")] = 0,
    covers: Annotated[int | None, typer.Option(help="manhole covers instead of the size's own number")] = None,
) -> None:
    """Broker + cloud + a simulated district on this machine, until Ctrl-C."""
    from simulators.demo import run_demo
    from simulators.district_run import SIZES

    if district not in SIZES:
        typer.echo(f"error: unknown district size {district!r}; use one of: {', '.join(SIZES)}", err=True)
        raise typer.Exit(2)
    run_demo(port=port, gateways=gateways, covers=covers, size=district)


def _cloud_public_key(given: str | None, role: str) -> str:
    """One of the cloud's public keys for the gateways (``commands`` or ``documents``): given, or from the
    cloud's key file on this machine (``civicedge cloud public-key --role …`` prints it)."""
    if given:
        return given
    from cloud.settings import Settings
    from protocol.signing import load_private_key, public_key_b64

    s = Settings()
    path = s.command_key_file if role == "commands" else s.document_key_path
    if not path.exists():
        flag = "--command-public-key" if role == "commands" else "--document-public-key"
        typer.echo(
            f"error: no {role} key at {path}: pass {flag} (run `civicedge cloud public-key --role {role}` where "
            "the cloud runs) or point the cloud's settings (CE_COMMAND_KEY_FILE, CE_DOCUMENT_KEY_FILE) at its keys",
            err=True,
        )
        raise typer.Exit(2)
    return public_key_b64(load_private_key(path))


@sim_app.command()
def district(
    cloud: Annotated[str, typer.Option(envvar="CE_CLOUD_URL", help="the cloud's address")] = "http://127.0.0.1:8000",
    token: Annotated[str | None, typer.Option(envvar="CE_API_TOKEN", help="API token (CE_API_TOKENS)")] = None,
    broker: Annotated[
        str, typer.Option(help="mqtt://host:port the nodes and gateways publish to")
    ] = "mqtt://127.0.0.1:1883",
    command_public_key: Annotated[
        str | None,
        typer.Option(envvar="CE_COMMAND_PUBLIC_KEY", help="the cloud's command key (civicedge cloud public-key)"),
    ] = None,
    document_public_key: Annotated[
        str | None,
        typer.Option(
            envvar="CE_DOCUMENT_PUBLIC_KEY",
            help="the cloud's document key (civicedge cloud public-key --role documents)",
        ),
    ] = None,
    covers: Annotated[int, typer.Option(help="manhole covers")] = 16_000,
    cells: Annotated[int, typer.Option(help="grid cells")] = 1191,
    gates: Annotated[int, typer.Option(help="community gates (each a gateway with the real gate unit)")] = 50,
    towers: Annotated[int, typer.Option(help="parking-lift towers")] = 10,
    elevators: Annotated[int, typer.Option(help="elevators")] = 20,
    gate_fps: Annotated[float, typer.Option(help="frames each gate analyses per second")] = 2.0,
    site: Annotated[str, typer.Option(help="site id")] = "district",
    speed: Annotated[float, typer.Option(help="district seconds per real second")] = 1.0,
    fault_every_s: Annotated[
        float, typer.Option(help="a random cover fault this often (district time; 0: none)")
    ] = 600,
    outage_every_s: Annotated[
        float, typer.Option(help="a gateway goes offline this often (district time; 0: none)")
    ] = 0,
    outage_s: Annotated[float, typer.Option(help="how long an outage lasts (district time)")] = 7200,
    workdir: Annotated[Path, typer.Option(help="the gateways' outboxes and state")] = Path("var/district"),
    processes: Annotated[int, typer.Option(help="processes the gateways are split over (0: this one)")] = 4,
    register_first: Annotated[bool, typer.Option("--register/--no-register", help="register the district")] = True,
) -> None:
    """Run a district against a running cloud and broker until Ctrl-C: registers departments, grid cells, the
    registry CSV, the nodes, gateways and residents; then covers report, people use the gates, towers and
    elevators, faults and gateway outages happen. (Broker restarts need a broker the district owns: make demo.)"""
    import signal
    from urllib.parse import urlparse

    import httpx

    from simulators.community import CommunitySpec
    from simulators.district import DistrictSpec
    from simulators.district_run import DistrictRun, Schedule, answering_residents

    gateways = gates + towers + elevators
    key = _cloud_public_key(command_public_key, "commands") if gateways else ""
    doc_key = _cloud_public_key(document_public_key, "documents") if gateways else ""
    u = urlparse(broker)
    run = DistrictRun(
        DistrictSpec(covers=covers, cells=cells),
        CommunitySpec(gates=gates, towers=towers, elevators=elevators, gate_fps=gate_fps),
        workdir,
        u.hostname or "127.0.0.1",
        u.port or 1883,
        key,
        doc_key,
        schedule=Schedule(speed=speed, fault_every_s=fault_every_s, outage_every_s=outage_every_s, outage_s=outage_s),
        site=site,
        processes=processes,
    )
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    api = httpx.Client(base_url=cloud, headers=headers, timeout=60)
    if register_first:
        try:
            run.register(api, progress=lambda m: typer.echo(f"  {m}"))
        except (httpx.HTTPError, RuntimeError) as exc:
            typer.echo(f"error: registering the district at {cloud} failed: {exc}", err=True)
            raise typer.Exit(2) from None

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run.start(progress=lambda m: typer.echo(f"  {m}"))
        typer.echo(f"{covers} covers and {len(run.gateways)} gateways at {speed:g}× on {broker}; Ctrl-C stops")
        try:
            await run.run(stop, answering_residents(api))
        finally:
            await run.close()
        typer.echo(f"stopped after {run.nodes.sent} cover messages; outages: {len(run.links.log.events) // 2}")

    asyncio.run(main())
