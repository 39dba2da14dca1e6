"""The one ``civicedge`` command; each subcommand group lives with the part it drives."""

from __future__ import annotations

import os

# OpenBLAS worker threads busy-wait after each matrix product and steal the cores LiteRT's XNNPACK threads need
# (measured with `civicedge bench gate`: decision p50 27 ms with them, 16 ms without). Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import importlib
import sys

import typer
from pydantic import ValidationError

app = typer.Typer(
    help="CivicEdge: edge-first software for smart communities.", no_args_is_help=True, pretty_exceptions_enable=False
)
#: each group: (name, module, attribute, the extra that installs what it needs)
GROUPS = (
    ("protocol", "protocol.cli", "app", None),
    ("edge", "edge.cli", "app", "edge"),
    ("vision", "edge.vision.cli", "app", "edge"),
    ("cloud", "cloud.cli", "app", "cloud"),
    ("chaos", "simulators.cli", "app", "dev"),
    ("sim", "simulators.cli", "sim_app", "dev"),
    ("bench", "bench.cli", "app", "dev"),
)
OWN = ("civicedge", "protocol", "edge", "cloud", "simulators", "bench")


def _unavailable(name: str, missing: str, extra: str | None) -> None:
    """A group whose part is not installed here (a gateway has no cloud packages, a cloud no camera stack):
    it says what to install instead of failing every other group."""
    fix = f"pip install 'civicedge[{extra}]'" if extra else "reinstall civicedge"
    settings = {"allow_extra_args": True, "ignore_unknown_options": True}

    @app.command(name=name, context_settings=settings, add_help_option=False, help=f"(not installed here: {fix})")
    def stub(ctx: typer.Context) -> None:
        typer.echo(f"error: civicedge {name} needs {missing!r}, which is not installed here: {fix}", err=True)
        raise typer.Exit(2)


for _name, _module, _attr, _extra in GROUPS:
    try:
        app.add_typer(getattr(importlib.import_module(_module), _attr), name=_name)
    except ModuleNotFoundError as _exc:
        if (_exc.name or "").split(".")[0] in OWN:
            raise  # the project's own module missing: a broken install, not a part left out
        _unavailable(_name, _exc.name or "a package", _extra)


def _not_installed(exc: ModuleNotFoundError) -> bool:
    """A third-party package a command reached for at run time is missing: say which and what installs it."""
    if not exc.name or exc.name.split(".")[0] in OWN:
        return False  # the project's own module: a broken install, shown as it is
    group = sys.argv[1] if len(sys.argv) > 1 else ""
    extra = next((e for n, _m, _a, e in GROUPS if n == group), None)
    fix = f"pip install 'civicedge[{extra}]'" if extra else "install the package"
    print(f"error: civicedge {group} needs {exc.name!r}, which is not installed here: {fix}", file=sys.stderr)
    return True


def main() -> None:
    try:
        app()
    except ModuleNotFoundError as exc:
        if not _not_installed(exc):
            raise
        raise SystemExit(2) from None
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
