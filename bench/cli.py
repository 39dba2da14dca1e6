"""``civicedge bench …``: benchmarks that print one JSON object each."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer

app = typer.Typer(help="Benchmarks (JSON on stdout).", no_args_is_help=True)


@app.command()
def outbox(
    messages: Annotated[int, typer.Option(help="messages per enqueue round")] = 100_000,
    producers: Annotated[int, typer.Option(help="concurrent producers")] = 100,
    drain_messages: Annotated[int, typer.Option(help="messages per drain round")] = 20_000,
    rounds: Annotated[int, typer.Option(help="rounds; medians are reported")] = 3,
    json_out: Annotated[bool, typer.Option("--json", help="compact JSON")] = False,
) -> None:
    """Committed enqueues/s (one message a call: enqueue_per_s; a hundred a call with put_many:
    enqueue_batch_per_s, target 75,000), drain/s to a real Mosquitto, and drain / direct-publish ratio (≥ 0.7)."""
    from bench.outbox import run

    report = asyncio.run(run(messages, producers, drain_messages, rounds=rounds))
    print(json.dumps(report, indent=None if json_out else 2))


@app.command()
def ingest(
    messages: Annotated[int, typer.Option(help="telemetry batches in all")] = 6000,
    readings: Annotated[int, typer.Option("--readings-per-message", min=1, help="readings per batch")] = 100,
    publishers: Annotated[int, typer.Option(min=1, help="publisher processes")] = 2,
    single: Annotated[int, typer.Option(min=4, help="single-reading messages (manhole.reading) in all")] = 20_000,
    db: Annotated[str, typer.Option(help="the storage engine: sqlite or postgresql")] = "sqlite",
    json_out: Annotated[bool, typer.Option("--json", help="compact JSON")] = False,
) -> None:
    """Broker → durable store: readings/s against the storage engine's own ceiling (one and two workers draining
    a backlog, and one worker live beside the publishers); single readings against a do-nothing subscriber."""
    from bench.databases import ENGINES
    from bench.ingest import run

    if db not in ENGINES:
        raise typer.BadParameter("use sqlite or postgresql", param_hint="--db")
    report = run(messages, readings, publishers, db=db, single_messages=single)
    print(json.dumps(report, indent=None if json_out else 2))


@app.command()
def fuzz(
    examples: Annotated[
        int, typer.Option(min=1, help="generated requests per operation (valid and refused ones)")
    ] = 100,
    json_out: Annotated[bool, typer.Option("--json", help="compact JSON")] = False,
) -> None:
    """The API fuzzer against the cloud's OpenAPI schema: requests sent, operations that answered 5xx."""
    from bench.fuzz import run

    report = run(examples)
    print(json.dumps(report, indent=None if json_out else 2))
    if report["failures"]:
        raise typer.Exit(1)


@app.command()
def rules(
    rounds: Annotated[int, typer.Option(help="rounds; medians are reported")] = 3,
    json_out: Annotated[bool, typer.Option("--json", help="compact JSON")] = False,
) -> None:
    """Ingestion with the default rules on vs off, and per-observation cost at 1,000 rules."""
    from bench.rules import run

    print(json.dumps(run(rounds), indent=None if json_out else 2))


@app.command()
def gate(
    arrivals: Annotated[int, typer.Option(help="simulated arrivals (after 10 warm-up)")] = 300,
    residents: Annotated[int, typer.Option(help="synthetic residents in the gallery besides the real face")] = 2000,
    threads: Annotated[int, typer.Option(help="inference threads per model")] = 2,
    opens: Annotated[int, typer.Option(help="resident frames for the frame → relay latency")] = 40,
    calls: Annotated[int, typer.Option(help="visitor calls through broker and cloud")] = 15,
    delegate: Annotated[
        str, typer.Option(help="LiteRT delegate for the main run: cpu, xnnpack, edgetpu, gpu")
    ] = "xnnpack",
    json_out: Annotated[bool, typer.Option("--json", help="compact JSON")] = False,
) -> None:
    """Gate vision on simulated arrivals (decision latency, model time, search over 50k, temperature error,
    the same frames on every LiteRT delegate present), then the unit itself: frame → relay, and a visitor call
    through broker and cloud → relay."""
    from bench.gate import run
    from bench.gate_unit import run as run_unit

    report = run(arrivals, residents, threads, delegate=delegate)
    report.update(run_unit(opens, calls))
    print(json.dumps(report, indent=None if json_out else 2))


@app.command()
def liveness(
    sequences: Annotated[
        int, typer.Option(help="recorded approaches of each kind (live, still, print, screen, replay)")
    ] = 20,
    seconds: Annotated[float, typer.Option(help="length of each recording")] = 4.0,
    fps: Annotated[float, typer.Option(help="camera frame rate")] = 10.0,
    seed: Annotated[int, typer.Option(help="which recordings")] = 1,
    json_out: Annotated[bool, typer.Option("--json", help="compact JSON")] = False,
) -> None:
    """Liveness without a thermal camera on recorded approaches made from the shipped photos: the share of
    prints and screens let through (APCER), of live people turned away (BPCER), and when each was decided."""
    from bench.liveness import run

    print(json.dumps(run(sequences, seconds, fps, seed), indent=None if json_out else 2))


@app.command()
def wear(
    idle_s: Annotated[float, typer.Option(help="seconds with nobody at the gate (two heartbeats)")] = 130.0,
    busy_s: Annotated[float, typer.Option(help="seconds with residents arriving")] = 60.0,
    every_s: Annotated[float, typer.Option(help="a resident arrives every this many seconds")] = 3.0,
    passages: Annotated[int, typer.Option(help="decisions a day at a busy gate, for the daily figure")] = 2000,
    json_out: Annotated[bool, typer.Option("--json", help="compact JSON")] = False,
) -> None:
    """Bytes a gate's gateway writes to its card per day (SD wear), from the kernel's I/O accounting."""
    from bench.wear import run

    print(json.dumps(run(idle_s, busy_s, every_s, passages), indent=None if json_out else 2))


@app.command()
def lift(
    hours: Annotated[float, typer.Option(help="length of the simulated peak (tower hours)")] = 1.0,
    speed: Annotated[float, typer.Option(help="tower time runs this many times faster than the clock")] = 40.0,
    arrivals: Annotated[float, typer.Option("--arrivals-per-h", help="cars arriving per hour")] = 50.0,
    departures: Annotated[float, typer.Option("--departures-per-h", help="drivers leaving per hour")] = 30.0,
    seed: Annotated[int, typer.Option(help="traffic seed (both policies see the same morning)")] = 7,
    json_out: Annotated[bool, typer.Option("--json", help="compact JSON")] = False,
) -> None:
    """A hospital morning at a parking tower: retrieval times with the smart scheduler vs first-come-first-served."""
    from bench.lift import run

    report = run(seed=seed, hours=hours, speed=speed, arrivals_h=arrivals, departures_h=departures)
    print(json.dumps(report, indent=None if json_out else 2))


@app.command()
def fleet(
    covers: Annotated[int, typer.Option(help="manhole covers (nodes)")] = 16_000,
    cells: Annotated[int, typer.Option(help="grid cells")] = 1191,
    hours: Annotated[float, typer.Option(help="district time to run")] = 1.0,
    speed: Annotated[float, typer.Option(help="district seconds per real second")] = 60.0,
    faults: Annotated[int, typer.Option(help="faults injected over the period")] = 40,
    nodes: Annotated[int, typer.Option(min=1, help="API nodes (cloud run); beyond one: on PostgreSQL")] = 1,
    workers: Annotated[int, typer.Option(min=0, help="standalone ingestion workers (cloud ingest)")] = 0,
    db: Annotated[str, typer.Option(help="sqlite or postgresql (several processes: always postgresql)")] = "sqlite",
    rate: Annotated[float, typer.Option(min=0.1, help="the district's message rate, multiplied")] = 1.0,
    profile: Annotated[bool, typer.Option(help="sample the cloud with py-spy while the district runs")] = False,
    capacity: Annotated[bool, typer.Option(help="then find the highest rate multiple the cloud holds")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="compact JSON")] = False,
) -> None:
    """The district against the cloud: messages/s stored (offered_msgs_per_s beside it), fault → console alarm
    latency (p50/p99, target p99 ≤ 1,000 ms), lost, duplicates, cloud memory (≤ 500 MB), cores each part used
    (cpu_cores). --rate multiplies the message rate; --capacity then steps it to the highest the cloud holds
    (capacity_rate, capacity_msgs_per_s); --profile samples the cloud with py-spy (profile). With
    --nodes/--workers: the same against several processes, beside one process, in one run."""
    from bench.fleet import run

    if db not in ("sqlite", "postgresql"):
        raise typer.BadParameter("use sqlite or postgresql", param_hint="--db")
    if (nodes > 1 or workers) and (profile or capacity):
        raise typer.BadParameter("--profile and --capacity are for one cloud process (no --nodes/--workers)")
    report = run(
        covers=covers,
        cells=cells,
        period_h=hours,
        speed=speed,
        faults=faults,
        nodes=nodes,
        workers=workers,
        db=db,
        rate=rate,
        profile=profile,
        capacity=capacity,
    )
    print(json.dumps(report, indent=None if json_out else 2))


@app.command()
def throwing(
    minutes: Annotated[float, typer.Option(help="minutes of rendered facade video")] = 30.0,
    clip_s: Annotated[float, typer.Option(help="seconds per clip (every other clip has an object dropped)")] = 30.0,
    fps: Annotated[float, typer.Option(help="the camera's frame rate")] = 15.0,
    json_out: Annotated[bool, typer.Option("--json", help="compact JSON")] = False,
) -> None:
    """High-altitude throwing: detection rate, false alarms per hour, detector time per frame."""
    from bench.throwing import run

    report = run(minutes, clip_s, fps)
    print(json.dumps(report, indent=None if json_out else 2))


@app.command()
def aarch64(
    rebuild: Annotated[
        bool, typer.Option(help="make the arm64 root and the wheels again instead of the cached ones")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="compact JSON")] = False,
) -> None:
    """The gateway on aarch64 under qemu user-mode emulation (Debian bookworm arm64, Python 3.11): gate face
    decisions on the project's photos, compared with this machine's, and `civicedge edge doctor`. The root and
    the wheels are cached in $CE_AARCH64_CACHE (default ~/.cache/civicedge/aarch64)."""
    from bench.aarch64 import run

    report = run(rebuild)
    print(json.dumps(report, indent=None if json_out else 2))
    if not report["ok"]:
        raise typer.Exit(1)
