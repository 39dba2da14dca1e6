"""``civicedge protocol …``: export JSON Schemas, validate a message."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from protocol.codec import decode
from protocol.errors import ProtocolError
from protocol.schema import write_schemas

app = typer.Typer(help="The wire contract: schemas and validation.", no_args_is_help=True)


@app.command()
def schema(out: Annotated[Path, typer.Option("--out", help="directory to write the schemas to")]) -> None:
    """Write one JSON Schema per message type into OUT."""
    paths = write_schemas(out)
    typer.echo(f"wrote {len(paths)} files to {out}")


@app.command()
def validate(
    file: Annotated[str, typer.Argument(help="message file (JSON), or - for standard input")],
    topic: Annotated[str | None, typer.Option("--topic", help="topic it arrived on (checks channel, device)")] = None,
) -> None:
    """Validate one message; exit 0 if it is acceptable, else 1 with the reason on stderr."""
    try:
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        typer.echo(f"error: cannot read {file}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    try:
        env = decode(data, topic)
    except ProtocolError as exc:
        typer.echo(f"invalid: {exc.reason.value}: {exc.detail}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"ok: {env.type} from {env.dev} (seq {env.seq}, id {env.id})")
