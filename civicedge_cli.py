"""The one ``civicedge`` command; each subcommand group lives with the part it drives."""

from __future__ import annotations

import os

# OpenBLAS worker threads busy-wait after each matrix product and steal the cores LiteRT's XNNPACK threads need
# (measured with `civicedge bench gate`: decision p50 27 ms with them, 16 ms without). Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import typer

from bench.cli import app as bench_app
from cloud.cli import app as cloud_app
from edge.cli import app as edge_app
from edge.vision.cli import app as vision_app
from protocol.cli import app as protocol_app
from simulators.cli import app as chaos_app
from simulators.cli import sim_app

app = typer.Typer(
    help="CivicEdge: edge-first software for smart communities.", no_args_is_help=True, pretty_exceptions_enable=False
)
app.add_typer(protocol_app, name="protocol")
app.add_typer(edge_app, name="edge")
app.add_typer(vision_app, name="vision")
app.add_typer(cloud_app, name="cloud")
app.add_typer(chaos_app, name="chaos")
app.add_typer(sim_app, name="sim")
app.add_typer(bench_app, name="bench")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
