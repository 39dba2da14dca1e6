"""``civicedge edge …``: run the gateway agent, check a config file."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from edge.config import AgentConfig, ConfigError, load_config_raw

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

app = typer.Typer(help="The gateway agent.", no_args_is_help=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="agent config file (YAML)")]


@app.command()
def run(
    config: ConfigOpt,
    no_reexec: Annotated[bool, typer.Option("--no-reexec", help="exit 75 on restart instead of re-executing")] = False,
    json_logs: Annotated[bool, typer.Option("--json-logs", help="log JSON lines instead of key=value")] = False,
) -> None:
    """Run the agent until SIGTERM/SIGINT. Exit codes: 0 stopped, 2 bad config, 3 fatal, 75 restart."""
    from civicedge.log import setup_logging
    from edge.agent import EXIT_FATAL, EXIT_RESTART, Agent

    try:
        raw, cfg = load_config_raw(config)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    setup_logging(cfg.log_level, json_logs)
    try:
        agent = Agent(cfg, config, raw)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        code = asyncio.run(agent.run())
    except Exception as exc:
        typer.echo(f"fatal: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(EXIT_FATAL) from None
    if code == EXIT_RESTART and not no_reexec:
        os.execv(sys.executable, [sys.executable, "-m", "civicedge_cli", *sys.argv[1:]])
    raise typer.Exit(code)


@app.command("check-config")
def check_config(config: Annotated[Path, typer.Argument(help="agent config file (YAML)")]) -> None:
    """Validate a config file; print the problems with their field paths."""
    cfg = _config_or_exit(config)
    own = _own_key_or_exit(cfg)
    typer.echo(
        f"ok: device {cfg.device.site}/{cfg.device.id}, broker {cfg.mqtt.host}:{cfg.mqtt.port}, "
        f"{len(cfg.units)} unit(s)"
    )
    for secret in (cfg.device.signing_key_file, cfg.mqtt.password_file):
        if secret is not None and secret.exists() and secret.stat().st_mode & 0o077:
            typer.echo(f"warning: {secret} is readable by others: chmod 600 {secret}", err=True)
    if own is None:
        typer.echo(
            "warning: no device.signing_key_file: this gateway's messages go unsigned, so the cloud refuses the faces "
            "it enrols (tools/flash.py gateway-bundle makes the key; or civicedge edge keygen --out FILE and "
            "register its public half)",
            err=True,
        )
    for unit in cfg.units:
        vision = getattr(unit, "vision", None)
        if vision is not None and not vision.liveness.enabled:
            typer.echo(
                f"warning: {getattr(unit, 'door', 'a gate')}: liveness is off — a photo of a resident opens this door",
                err=True,
            )
    key_file = cfg.commands.public_key_file
    if key_file is not None and not key_file.exists():
        typer.echo(
            f"warning: commands.public_key_file {key_file} does not exist (yet): commands will be refused", err=True
        )
    missing = [r for r, key in cfg.provisioned_keys().items() if not key and (r != "updates" or cfg.updates)]
    if missing:
        typer.echo(
            f"warning: no {', '.join(missing)} key: this gateway will refuse every "
            f"{'/'.join({'commands': 'command', 'documents': 'document', 'updates': 'update'}[r] for r in missing)} "
            "(civicedge cloud public-key --role … prints them; tools/flash.py gateway-bundle writes them)",
            err=True,
        )


@app.command()
def doctor(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="also check this agent config")] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="where the agent keeps its state (default: the outbox's)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object")] = False,
) -> None:
    """Self-check of this gateway: Python and platform, clock, packages, every shipped model loaded and run once,
    SQLite in the state folder, free space, the config and every /dev path it names. Exit 1 if a check fails."""
    import json

    from edge.doctor import report, run_checks

    checks = run_checks(config, state_dir)
    out = report(checks)
    if as_json:
        typer.echo(json.dumps(out))
    else:
        marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
        for c in checks:
            typer.echo(f"{marks[c.state]}  {c.name:34} {c.detail}")
        typer.echo("all checks passed" if out["ok"] else "some checks failed: see FAIL above")
    raise typer.Exit(0 if out["ok"] else 1)


@app.command()
def launch(
    root: Annotated[Path, typer.Option(help="install root holding versions/ and current (updates.root)")],
    config: ConfigOpt,
) -> None:
    """Run the agent version ``<root>/current`` points at; restart it when asked; roll a new version back if it
    does not become healthy in time. This is what systemd starts on an updatable gateway."""
    from civicedge.log import setup_logging
    from edge.launcher import main

    setup_logging("warning", False)
    raise typer.Exit(main(root, config))


@app.command("install-version")
def install_version(
    root: Annotated[Path, typer.Option(help="install root (updates.root)")],
    src: Annotated[
        Path, typer.Option(help="a folder holding civicedge/, edge/ and protocol/ (default: this installation)")
    ] = Path(__file__).resolve().parent.parent,
) -> None:
    """Install this agent's own code as the first version under ``root`` (``edge install`` does this too)."""
    from civicedge import __version__
    from edge.appliance import install_version as install

    dest = install(root, src, __version__)
    typer.echo(f"installed {__version__} at {dest}; current → {__version__}")


@app.command("install")
def install_cmd(
    bundle: Annotated[Path, typer.Option(help="the gateway bundle folder (tools/flash.py gateway-bundle made it)")],
    prefix: Annotated[Path, typer.Option(help="install into this root instead of / (an image being prepared)")] = Path(
        "/"
    ),
    journal_max: Annotated[
        str, typer.Option(help="cap the journal at this size (journald SystemMaxUse); '' leaves journald alone")
    ] = "64M",
    hardware_watchdog: Annotated[
        bool,
        typer.Option(help="let systemd feed the board's hardware watchdog (RuntimeWatchdogSec; see the docs)"),
    ] = False,
    start: Annotated[bool, typer.Option(help="enable and start the service when systemd runs here")] = True,
    replace_secrets: Annotated[
        bool, typer.Option(help="take the bundle's secrets over those installed (a bundle made again)")
    ] = False,
    venv: Annotated[
        Path | None, typer.Option(help="the venv the unit runs (default: this one; /opt/civicedge/venv for an image)")
    ] = None,
) -> None:
    """Make this machine a gateway (as root): the service user and its hardware groups, /etc/civicedge from the
    bundle, the state folder, the first A/B version, the systemd unit (Type=notify, watchdog), then start it.
    Safe to run again: secrets, a changed config and an installed version are kept."""
    from edge.appliance import InstallError, Layout, install

    try:
        device = install(
            bundle,
            Layout(prefix=prefix.resolve(), venv=venv or Path(sys.prefix)),
            journal_max=journal_max or None,
            hardware_watchdog=hardware_watchdog,
            start_service=start,
            replace_secrets=replace_secrets,
            say=typer.echo,
        )
    except InstallError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except OSError as exc:
        typer.echo(f"error: {exc.strerror}: {exc.filename} (is the disk full or read-only?)", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"gateway {device} installed. Check it as the service: sudo -u civicedge "
        f"/opt/civicedge/venv/bin/civicedge edge doctor -c /etc/civicedge/config.yaml; "
        f"on the laptop: python tools/flash.py verify --device {device}"
    )


@app.command("keygen")
def keygen(
    out: Annotated[Path, typer.Option(help="where to write the private key (PEM, mode 0600)")],
    force: Annotated[bool, typer.Option("--force", help="replace an existing key (then register the new one)")] = False,
) -> None:
    """Make this gateway's own signing key (device.signing_key_file) and print its public half, which the cloud
    must hold (``POST /provision`` registers it; so does ``PUT /api/devices/{id}/signing-key``)."""
    from protocol.signing import generate_key, private_key_pem, public_key_b64

    if out.is_dir():
        typer.echo(f"error: {out} is a folder; name the key file, e.g. --out {out / 'signing-key.pem'}", err=True)
        raise typer.Exit(2)
    if out.exists() and not force:
        typer.echo(
            f"error: {out} exists (the cloud may hold its public half already). Add --force to replace it, then "
            "register the new public half",
            err=True,
        )
        raise typer.Exit(2)
    key = generate_key()
    try:
        out.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
        tmp = out.with_name(out.name + ".new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)  # whatever mode a leftover file had
            f.write(private_key_pem(key))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except OSError as exc:
        typer.echo(f"error: cannot write {out}: {exc.strerror}", err=True)
        raise typer.Exit(2) from None
    typer.echo(public_key_b64(key))
    typer.echo(
        f"wrote {out} (0600). Name it in the config as device.signing_key_file and register the public half above: "
        'PUT /api/devices/{id}/signing-key {"signing_key": "…"}',
        err=True,
    )


@app.command("trust")
def trust_show(config: ConfigOpt) -> None:
    """Show the keys this gateway has pinned (and whether its config names others), and its own key."""
    cfg = _config_or_exit(config)
    path = cfg.outbox.path
    pinned = _pinned(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) if path.exists() else {}
    for role, configured in cfg.provisioned_keys().items():
        have = pinned.get(role)
        if have is None:
            shown = f"{configured}  (not pinned yet: pinned at the next start)" if configured else "(none: refuses all)"
        else:
            shown = have + ("" if not configured or configured == have else "  (the config names another: ignored)")
        typer.echo(f"{role:9} {shown}")
    own = _own_key_or_exit(cfg)
    if own is None:
        typer.echo(f"{'device':9} (none: its messages go unsigned; civicedge edge keygen makes a key)")
    else:
        from protocol.signing import public_key_b64

        typer.echo(f"{'device':9} {public_key_b64(own)}  (this gateway's own key: the cloud must hold it)")


@app.command("trust-reset")
def trust_reset(
    config: ConfigOpt,
    yes: Annotated[bool, typer.Option("--yes", help="do it (the agent must be stopped)")] = False,
) -> None:
    """Forget the pinned keys, so the next start pins the ones the config names. For a technician re-provisioning
    the gateway on site (root on the device is needed anyway): never reachable from the cloud or the broker."""
    cfg = _config_or_exit(config)
    if not yes:
        typer.echo("error: this makes the gateway trust whatever keys its config names; add --yes", err=True)
        raise typer.Exit(2)
    if not cfg.outbox.path.exists():
        typer.echo(f"nothing pinned: {cfg.outbox.path} does not exist yet")
        return
    db = sqlite3.connect(cfg.outbox.path)
    with db:
        n = db.execute("DELETE FROM kv WHERE key LIKE 'trust.key.%'").rowcount
    typer.echo(
        f"forgot {n} pinned key(s); the next start pins: {', '.join(k for k, v in cfg.provisioned_keys().items() if v)}"
    )


def _config_or_exit(path: Path) -> AgentConfig:
    try:
        _, cfg = load_config_raw(path)
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    return cfg


def _own_key_or_exit(cfg: AgentConfig) -> Ed25519PrivateKey | None:
    """The gateway's own key (None: it has none); an unusable one ends the command with the problem and fix."""
    try:
        return cfg.device.signing_key()
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _pinned(db: sqlite3.Connection) -> dict[str, str]:
    try:
        rows = db.execute("SELECT key, value FROM kv WHERE key LIKE 'trust.key.%'").fetchall()
    except sqlite3.OperationalError:  # no agent database yet
        return {}
    return {k.removeprefix("trust.key."): v for k, v in rows}
