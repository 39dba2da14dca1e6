"""``civicedge cloud …``: run the API + ingestion, run a standalone worker, migrate, show the command key."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from edge.log import setup_logging

app = typer.Typer(help="The cloud service.", no_args_is_help=True)


@app.command()
def run(
    host: Annotated[str | None, typer.Option(help="listen address (CE_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="listen port (CE_PORT)")] = None,
    workers: Annotated[int | None, typer.Option(help="ingestion workers in this process (CE_INGEST_WORKERS)")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
) -> None:
    """Serve the REST API and run ingestion workers (settings from CE_* environment variables)."""
    import uvicorn

    from cloud.api.app import create_app
    from cloud.settings import Settings

    overrides: dict[str, object] = {}
    if workers is not None:
        overrides["ingest_workers"] = workers
    settings = Settings(**overrides)  # type: ignore[arg-type]
    setup_logging(settings.log_level)
    uvicorn.run(create_app(settings), host=host or settings.host, port=port or settings.port, log_level=log_level)


@app.command()
def ingest(
    worker_id: Annotated[str, typer.Option(help="stable id: a restarted worker gets its unacked messages back")] = "0",
) -> None:
    """Run one standalone ingestion worker (scale out by starting more, on any machine)."""
    from cloud.ingest.worker import IngestWorker
    from cloud.service import CloudService
    from cloud.settings import Settings

    settings = Settings(ingest_workers=0)
    setup_logging(settings.log_level)
    svc = CloudService(settings, start_mqtt=False)
    svc.start()
    host, port, user, password = settings.broker
    worker = IngestWorker(
        svc.store,
        host,
        port,
        client_id=f"ingest-{worker_id}",
        group=settings.ingest_share_group,
        batch_rows=settings.ingest_batch_rows,
        batch_ms=settings.ingest_batch_ms,
        username=user,
        password=password,
        on_batch=svc._on_batch,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_a: stop.set())
    signal.signal(signal.SIGINT, lambda *_a: stop.set())
    worker.start()
    if not worker.connected.wait(30):
        typer.echo(f"error: cannot reach the broker at {host}:{port}; check CE_BROKER_URL", err=True)
        worker.stop()
        raise typer.Exit(1)
    typer.echo(f"ingest worker {worker.client_id} subscribed to {worker.topic} at {host}:{port}", err=True)
    stop.wait()
    worker.stop()
    svc.stop()


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (Alembic)."""
    from cloud.db.engine import make_engine
    from cloud.db.engine import migrate as do_migrate
    from cloud.settings import Settings

    settings = Settings()
    do_migrate(make_engine(settings.database_url))
    typer.echo(f"database at {settings.database_url} is up to date")


@app.command("public-key")
def public_key() -> None:
    """Print the command-verification public key to put in device configs (commands.public_key)."""
    from cloud.commands import load_or_create_key
    from cloud.settings import Settings
    from protocol.signing import public_key_b64

    typer.echo(public_key_b64(load_or_create_key(Settings().command_key_file)))
