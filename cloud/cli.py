"""``civicedge cloud …``: run the API + ingestion, run a standalone worker, migrate, show the command key."""

from __future__ import annotations

import gc
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from civicedge.log import setup_logging

if TYPE_CHECKING:
    from cloud.settings import Settings

app = typer.Typer(help="The cloud service.", no_args_is_help=True)


def _preflight(settings: Settings) -> None:
    """What would otherwise end a starting node in a traceback, said in a sentence: the rule set, the database
    (migrated here, once: nodes starting together take turns)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from cloud.db.engine import make_engine, migrate
    from cloud.rules.model import RulesError, load_rules_file

    if settings.rules_file is not None:
        try:
            load_rules_file(settings.rules_file)
        except RulesError as exc:
            typer.echo(f"error: {exc} (CE_RULES_FILE)", err=True)
            raise typer.Exit(2) from None
    where = make_url(settings.database_url).render_as_string(hide_password=True)
    try:
        engine = make_engine(settings.database_url)
        migrate(engine)
        engine.dispose()
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[-1][:300]
        typer.echo(f"error: cannot use the database at {where}: {reason}; check CE_DATABASE_URL", err=True)
        raise typer.Exit(2) from None


def _tune_gc() -> None:
    """Collect garbage for a service that holds many objects for a long time and makes many short-lived ones.

    A batch of ingestion builds tens of thousands of objects (messages, readings, rows) that all die together
    when it commits; with the interpreter's default thresholds every 700 allocations start a collection that
    walks them, and the older generations (the registry, the rules, the app) again and again: a third of an
    ingestion worker's time. What exists once the process is set up is frozen (never walked again), and the
    youngest generation is collected every 50,000 allocations. Cycles are still collected, only less often.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


@app.command()
def run(
    host: Annotated[str | None, typer.Option(help="listen address (CE_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="listen port (CE_PORT)")] = None,
    workers: Annotated[int | None, typer.Option(help="ingestion workers in this process (CE_INGEST_WORKERS)")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
) -> None:
    """Serve the REST API and run ingestion workers (settings from CE_* environment variables)."""
    import uvicorn

    from cloud.app import create_app
    from cloud.settings import Settings

    overrides: dict[str, object] = {}
    if workers is not None:
        overrides["ingest_workers"] = workers
    settings = Settings(**overrides)  # type: ignore[arg-type]
    setup_logging(settings.log_level)
    _preflight(settings)
    if settings.ingest_workers and not settings.ingest_share_group and settings.database_url.startswith("postgres"):
        typer.echo(
            "note: this node's ingestion takes a plain subscription; if other processes ingest too, give every one "
            "the same CE_INGEST_SHARE_GROUP (or they each receive every message)",
            err=True,
        )
    if not settings.api_tokens:
        from cloud.auth.service import Auth
        from cloud.db.engine import make_engine
        from cloud.db.engine import migrate as do_migrate

        engine = make_engine(settings.database_url)
        do_migrate(engine)
        if not Auth(engine).has_users():
            typer.echo(
                "no account exists yet: the API and console stay closed (only /healthz answers) until you create the "
                "first admin: civicedge cloud create-user NAME",
                err=True,
            )
        engine.dispose()
    where = f"http://{host or settings.host}:{port or settings.port}"
    typer.echo(
        f"cloud node at {where} (health at {where}/healthz); ingestion workers: {settings.ingest_workers}", err=True
    )
    web = create_app(settings)
    _tune_gc()
    uvicorn.run(web, host=host or settings.host, port=port or settings.port, log_level=log_level)


@app.command()
def ingest(
    worker_id: Annotated[str, typer.Option(help="stable id: a restarted worker gets its unacked messages back")] = "0",
    health_host: Annotated[str, typer.Option(help="address of the worker's /healthz and /metrics")] = "127.0.0.1",
    health_port: Annotated[
        int, typer.Option(envvar="CE_INGEST_HEALTH_PORT", help="port of /healthz and /metrics (0: any free port)")
    ] = 0,
) -> None:
    """Run one standalone ingestion worker (scale out by starting more, on any machine): the workers split the
    stream through the shared subscription group CE_INGEST_SHARE_GROUP (default: ingest). The worker serves
    /healthz (503 when it stalls or the database is away) and /metrics on its own port."""
    from cloud.ingest.health import HealthServer
    from cloud.service import CloudService
    from cloud.settings import Settings

    settings = Settings(ingest_workers=0)
    setup_logging(settings.log_level)
    _preflight(settings)
    svc = CloudService(settings, start_mqtt=False)

    try:  # first: a port in use is said before anything else happens
        health = HealthServer(health_host, health_port, svc.health, svc.metrics)
    except OSError as exc:
        where = f"{health_host}:{health_port}"
        typer.echo(
            f"error: cannot serve /healthz on {where}: {exc.strerror}; pick another --health-port "
            "(or CE_INGEST_HEALTH_PORT)",
            err=True,
        )
        raise typer.Exit(2) from None
    svc.start()
    _tune_gc()
    host, port, _user, _password = settings.ingest_broker
    workers = svc.new_workers(worker_id, shared=True)
    svc.workers.extend(workers)  # their health and gauges, the stall alarm
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_a: stop.set())
    signal.signal(signal.SIGINT, lambda *_a: stop.set())
    for w in workers:
        w.start()
    health.start()
    typer.echo(f"connecting to the broker at {host}:{port} …", err=True)
    if not all(w.connected.wait(30) for w in workers):
        typer.echo(
            f"error: cannot reach the broker at {host}:{port}; check CE_INGEST_BROKER_URL (or CE_BROKER_URL)", err=True
        )
        health.stop()
        svc.stop()
        raise typer.Exit(1)
    topics = ", ".join(t for w in workers for t in w.topics)
    typer.echo(
        f"ingest worker {worker_id} subscribed to {topics} at {host}:{port}; "
        f"health at http://{health_host}:{health.port}/healthz",
        err=True,
    )
    stop.wait()
    health.stop()
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
def public_key(
    role: Annotated[
        str, typer.Option(help="commands (commands.public_key), documents (commands.document_key), updates")
    ] = "commands",
) -> None:
    """Print one of the cloud's public keys as device configs hold it."""
    from cloud.commands import load_or_create_key
    from cloud.settings import Settings
    from protocol.signing import public_key_b64

    s = Settings()
    if role == "updates" and s.update_public_key:
        typer.echo(s.update_public_key)
        return
    paths = {"commands": s.command_key_file, "documents": s.document_key_path, "updates": s.update_key_file}
    if role not in paths:
        typer.echo(f"error: unknown role {role!r}; use commands, documents or updates", err=True)
        raise typer.Exit(2)
    try:
        typer.echo(public_key_b64(load_or_create_key(paths[role])))
    except (OSError, ValueError) as exc:
        typer.echo(f"error: {paths[role]} is not a usable private key (Ed25519, PEM): {exc}", err=True)
        raise typer.Exit(2) from None


@app.command("rotate-face-key")
def rotate_face_key() -> None:
    """Seal every stored face embedding with a new key (CE_FACE_KEY_FILE), in one transaction; the old key is
    kept as <file>.previous until it is done. Back up the new key file apart from the database."""
    from cloud.db.engine import make_engine
    from cloud.db.engine import migrate as do_migrate
    from cloud.gate.vault import FaceVault, VaultError
    from cloud.settings import Settings

    s = Settings()
    engine = make_engine(s.database_url)
    do_migrate(engine)
    try:
        n = FaceVault(s.face_key_path).rotate(engine)
    except VaultError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"re-sealed {n} embedding(s) with a new key at {s.face_key_path}")


@app.command("endorse-key")
def endorse_key(
    role: Annotated[str, typer.Option(help="the key being replaced: commands, documents or updates")],
    current_key: Annotated[Path, typer.Option(help="the CURRENT private key of that role (PEM); may be offline")],
    new_key: Annotated[Path, typer.Option(help="the NEW private key (PEM; created if missing) or public key file")],
    device: Annotated[list[str], typer.Option(help="device id (repeatable): an endorsement names its device")],
) -> None:
    """Endorse a new key with the current one, for a key rotation: prints, per device, the arguments of the
    ``rotate-key`` command to send (POST /api/devices/{id}/commands). See docs/security.md#keys."""
    import json

    from cloud.commands import load_or_create_key
    from protocol.signing import load_private_key, public_key_b64, sign_rotation

    try:
        current = load_private_key(current_key)
    except (OSError, ValueError) as exc:
        typer.echo(f"error: cannot use {current_key} as the current key: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        text = new_key.read_text().strip() if new_key.exists() else ""
        new_pub = text if text and "PRIVATE KEY" not in text else public_key_b64(load_or_create_key(new_key))
    except (OSError, ValueError) as exc:
        typer.echo(f"error: cannot use {new_key} as the new key (a PEM private key, or a public key): {exc}", err=True)
        raise typer.Exit(2) from None
    if new_pub == public_key_b64(current):
        typer.echo(
            "error: the new key is the current key; make a new one (a file name that does not exist yet)", err=True
        )
        raise typer.Exit(2)
    for d in device:
        try:
            endorsement = sign_rotation(current, device=d, role=role, new_public_key=new_pub)
        except ValueError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        args = {"role": role, "public_key": new_pub, "endorsement": endorsement}
        typer.echo(json.dumps({"device": d, "name": "rotate-key", "args": args}))


@app.command("import-assets")
def import_assets_cmd(
    file: Annotated[
        Path,
        typer.Argument(help="CSV: id,kind,subtype,department_id,grid_cell_id,lat,lon,device_id,install_date,notes"),
    ],
    strict: Annotated[bool, typer.Option("--strict", help="reject the whole file if any row is bad")] = False,
) -> None:
    """Import or update assets from a CSV file; bad rows are listed with their line numbers."""
    from rich.progress import Progress

    from cloud.db.engine import make_engine
    from cloud.db.engine import migrate as do_migrate
    from cloud.registry.csvio import import_assets
    from cloud.settings import Settings

    try:
        text = file.read_text(encoding="utf-8-sig")
    except OSError as exc:
        typer.echo(f"error: cannot read {file}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    except UnicodeDecodeError:
        typer.echo(f"error: {file} is not UTF-8; save it as UTF-8 CSV", err=True)
        raise typer.Exit(2) from None
    engine = make_engine(Settings().database_url)
    do_migrate(engine)
    with Progress(transient=True) as bar:
        task = bar.add_task("importing", total=max(0, text.count("\n") - 1))
        report = import_assets(engine, text, strict=strict, progress=lambda n: bar.advance(task, n))
    for line, reason in report.errors[:200]:
        typer.echo(f"{file}:{line}: {reason}", err=True)
    if len(report.errors) > 200:
        typer.echo(f"… and {len(report.errors) - 200} more bad rows", err=True)
    for line, reason in report.warnings[:50]:
        typer.echo(f"{file}:{line}: warning: {reason}", err=True)
    if len(report.warnings) > 50:
        typer.echo(f"… and {len(report.warnings) - 50} more warnings", err=True)
    if report.rejected:
        typer.echo(f"rejected: nothing imported ({len(report.errors)} problem(s))", err=True)
        raise typer.Exit(1)
    typer.echo(f"imported {report.imported} of {report.rows} rows; {len(report.errors)} bad row(s) skipped")
    raise typer.Exit(1 if report.errors else 0)


@app.command("export-assets")
def export_assets_cmd(file: Annotated[Path, typer.Argument(help="where to write the CSV")]) -> None:
    """Write the asset registry as CSV (the same columns import-assets reads)."""
    from cloud.db.engine import make_engine
    from cloud.registry.csvio import export_assets
    from cloud.settings import Settings

    if file.is_dir() or not file.parent.is_dir():
        typer.echo(f"error: cannot write {file}: give a file name in an existing folder (e.g. assets.csv)", err=True)
        raise typer.Exit(2)
    with file.open("w", encoding="utf-8", newline="") as f:
        for chunk in export_assets(make_engine(Settings().database_url)):
            f.write(chunk)
    typer.echo(f"wrote {file}")


@app.command("create-user")
def create_user(
    username: Annotated[str, typer.Argument(help="login name")],
    role: Annotated[str, typer.Option(help="admin, operator, department, grid_worker or resident")] = "admin",
    department: Annotated[str | None, typer.Option(help="for department users")] = None,
    resident: Annotated[str | None, typer.Option(help="for resident users: their resident id")] = None,
    language: Annotated[str | None, typer.Option(help="en or zh-CN (default: CE_DEFAULT_LANGUAGE)")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from stdin")] = False,
) -> None:
    """Create a console account (the first admin, typically). The password is asked for, or read from stdin."""
    import sys

    from cloud.auth.service import Auth
    from cloud.db.engine import make_engine, migrate
    from cloud.settings import Settings

    password = (
        sys.stdin.readline().rstrip("\n")
        if password_stdin
        else typer.prompt("password", hide_input=True, confirmation_prompt=True)
    )
    settings = Settings()
    engine = make_engine(settings.database_url)
    migrate(engine)
    try:
        lang = language or settings.default_language
        Auth(engine).create_user(username, password, role, department, resident, lang, by="cli")
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"user {username} ({role}) created")


@app.command("broker-init")
def broker_init(
    directory: Annotated[Path, typer.Argument(help="where to write mosquitto.conf, dynamic-security.json, the CA")],
    host: Annotated[
        str,
        typer.Option(help="address of the plain listener (the cloud's workers; loopback unless they run elsewhere)"),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="plain MQTT port (keep it on a private network)")] = 1883,
    tls_port: Annotated[int, typer.Option(help="TLS port for devices (0: none)")] = 8883,
    tls_bind: Annotated[str, typer.Option(help="address the TLS listener for devices binds to")] = "0.0.0.0",
    tls_host: Annotated[list[str], typer.Option(help="names/addresses in the broker's certificate")] = ["localhost"],  # noqa: B006
) -> None:
    """Lock a Mosquitto down: anonymous access off, per-device users and ACLs through the dynamic-security
    plugin, a TLS listener with the project's own CA. Prints the settings the cloud needs (once)."""
    from cloud.provisioning.broker import BrokerError, write_broker_files

    if (directory / "dynamic-security.json").exists():
        typer.echo(f"error: {directory} already holds a broker configuration; pick an empty directory", err=True)
        raise typer.Exit(2)
    try:
        out = write_broker_files(
            directory,
            host=host,
            port=port,
            tls_port=tls_port or None,
            tls_bind=tls_bind,
            tls_hosts=(*tls_host, "127.0.0.1"),
        )
    except BrokerError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"wrote {out['conf']} (start Mosquitto with: mosquitto -c {out['conf']})")
    typer.echo("cloud settings (keep them secret; they are not stored anywhere else):")
    typer.echo(f"  CE_BROKER_URL=mqtt://ce-cloud:{out['cloud_password']}@127.0.0.1:{port}")
    typer.echo(f"  CE_INGEST_BROKER_URL=mqtt://ce-ingest:{out['ingest_password']}@127.0.0.1:{port}")
    typer.echo("  CE_BROKER_DYNSEC=true")
    if out["ca"]:
        typer.echo(f"  CE_BROKER_CA_FILE={out['ca']}")
        typer.echo(f"  CE_PUBLIC_BROKER_PORT={tls_port}   CE_PUBLIC_BROKER_HOST=<the name devices use>")


@app.command("bundle")
def bundle(
    src: Annotated[
        Path, typer.Argument(help="folder whose files make the bundle (e.g. holding civicedge/, edge/ and protocol/)")
    ],
    version: Annotated[str, typer.Option(help="the version inside (dotted numbers)")],
    out: Annotated[Path, typer.Option(help="bundle file to write (.tar.gz)")],
    kind: Annotated[str, typer.Option(help="gateway, or a board app (manhole_node, …)")] = "gateway",
    min_version: Annotated[str | None, typer.Option(help="install only over this version or newer")] = None,
    exclude: Annotated[list[str], typer.Option(help="glob of files to leave out (repeatable)")] = [],  # noqa: B006
    notes: Annotated[str, typer.Option(help="release notes")] = "",
    key: Annotated[
        Path | None, typer.Option(help="the update key (PEM), e.g. on an offline machine (default CE_UPDATE_KEY_FILE)")
    ] = None,
    valid_days: Annotated[
        float, typer.Option(min=0.01, max=3650, help="devices refuse the bundle after this many days")
    ] = 180,
    downgrade: Annotated[
        bool, typer.Option("--downgrade", help="a deliberate roll-back: may install over newer versions")
    ] = False,
) -> None:
    """Build and sign an update bundle with the update key: on the machine that holds it (it can stay offline;
    the cloud needs only CE_UPDATE_PUBLIC_KEY), then upload the file (POST /api/updates)."""
    import math
    import re
    import shutil
    import tempfile

    from cloud.commands import load_or_create_key
    from cloud.settings import Settings
    from protocol.signing import load_private_key
    from protocol.updates import VERSION_PATTERN, BundleError, build_bundle, version_key

    def fail(message: str) -> NoReturn:
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(2)

    if not src.is_dir():
        fail(f"{src} is not a folder: give the folder whose files make the bundle")
    if out.is_dir() or not out.parent.is_dir():
        fail(f"cannot write {out}: give a file name in an existing folder (e.g. --out release-{version}.tar.gz)")
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", kind):
        fail(f"--kind {kind!r}: lower-case letters, digits and _ (gateway, manhole_node, …)")
    for flag, v in (("--version", version), ("--min-version", min_version)):
        if v is not None and not re.fullmatch(VERSION_PATTERN, v):
            fail(f"{flag} {v!r} is not a dotted version (e.g. 1.4.0)")
    if min_version and version_key(min_version) > version_key(version):
        fail(f"--min-version {min_version} is newer than the bundle's own version {version}")
    if not math.isfinite(valid_days):
        fail("--valid-days must be a number of days")
    try:
        signing = load_private_key(key) if key is not None else load_or_create_key(Settings().update_key_file)
    except (OSError, ValueError) as exc:
        where = key or Settings().update_key_file
        fail(f"cannot use {where} as the update key (a PRIVATE Ed25519 key, PEM): {exc}")
    with tempfile.TemporaryDirectory() as d:
        stage = Path(d) / "src"
        shutil.copytree(src, stage, ignore=shutil.ignore_patterns("__pycache__", *exclude))
        if not any(p.is_file() for p in stage.rglob("*")):
            fail(f"no files under {src} (after --exclude)")
        try:
            data = build_bundle(
                stage,
                kind=kind,
                version=version,
                key=signing,
                min_version=min_version,
                notes=notes,
                valid_days=valid_days,
                downgrade=downgrade,
            )
        except BundleError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
    out.write_bytes(data)
    typer.echo(f"wrote {out} ({len(data)} bytes, {kind} {version}); upload: POST /api/updates")
