"""The one ``civicedge`` command; each subcommand group lives with the part it drives."""

from __future__ import annotations

import os

# OpenBLAS worker threads busy-wait after each matrix product and steal the cores LiteRT's XNNPACK threads need
# (measured with `civicedge bench gate`: decision p50 27 ms with them, 16 ms without). Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import sys

import typer
from pydantic import ValidationError

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
    try:
        app()
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        # a setting someone typed: name it and say what is wrong (never echo the value: it may be a secret)
        for e in exc.errors():
            name = "CE_" + "_".join(str(p) for p in e["loc"][:1]).upper()
            print(f"error: {name}: {e['msg']}; fix it in the environment or .env", file=sys.stderr)
        raise SystemExit(2) from None
    except Exception as exc:
        if type(exc).__name__ != "SettingsError":  # pydantic-settings (cloud extra only) could not parse one
            raise
        print(f"error: {exc}; fix it in the environment or .env", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
