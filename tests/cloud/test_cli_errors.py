"""A newcomer's mistakes on the key and bundle commands get a sentence naming the problem and the fix (exit 2),
never a traceback, and a bad key never reaches a gateway's pinned keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from civicedge_cli import app
from protocol.signing import generate_key, private_key_pem, public_key_b64


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("CE_COMMAND_KEY_FILE", str(tmp_path / "keys" / "command-key.pem"))
    monkeypatch.setenv("CE_UPDATE_KEY_FILE", str(tmp_path / "keys" / "update-key.pem"))
    monkeypatch.setenv("CE_DATABASE_URL", f"sqlite:///{tmp_path / 'cloud.db'}")
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def _fails(cli: CliRunner, args: list[str], *words: str) -> None:
    r = cli.invoke(app, args)
    assert r.exit_code == 2, (args, r.output)
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert "Traceback" not in r.output and all(w in r.output for w in words), (args, r.output)


def test_bundle_mistakes(cli: CliRunner, tmp_path: Path) -> None:
    src = tmp_path / "release"
    (src / "edge").mkdir(parents=True)
    (src / "edge" / "__init__.py").write_text("")
    ok = ["cloud", "bundle", str(src), "--version", "1.0.0", "--out", str(tmp_path / "b.tar.gz")]
    _fails(cli, ["cloud", "bundle", str(tmp_path / "nope"), "--version", "1.0.0", "--out", "b.tar.gz"], "not a folder")
    _fails(cli, [*ok[:3], "--version", "1.0.0", "--out", str(tmp_path / "no" / "b.tar.gz")], "existing folder")
    _fails(cli, [*ok[:3], "--version", "1.0.0", "--out", str(tmp_path)], "existing folder")
    _fails(cli, [*ok, "--kind", "Bogus!"], "--kind")
    _fails(cli, [*ok, "--min-version", "9.0.0"], "newer than the bundle")
    _fails(cli, ["cloud", "bundle", str(src), "--version", "1.0/..", "--out", "b.tar.gz"], "dotted version")
    (tmp_path / "pub.txt").write_text(public_key_b64(generate_key()))
    _fails(cli, [*ok, "--key", str(tmp_path / "pub.txt")], "PRIVATE")
    assert cli.invoke(app, [*ok, "--valid-days", "0"]).exit_code == 2  # an already expired bundle
    done = cli.invoke(app, ok)
    assert done.exit_code == 0 and (tmp_path / "b.tar.gz").stat().st_size > 0, done.output


def test_key_commands_and_exports(cli: CliRunner, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "command-key.pem").write_text("garbage")
    _fails(cli, ["cloud", "public-key"], "not a usable private key")
    (keys / "command-key.pem").write_bytes(private_key_pem(generate_key()))
    assert cli.invoke(app, ["cloud", "public-key", "--role", "documents"]).exit_code == 0
    current = tmp_path / "doc.pem"
    current.write_bytes(private_key_pem(generate_key()))
    _fails(
        cli,
        [
            "cloud",
            "endorse-key",
            "--role",
            "documents",
            "--current-key",
            str(current),
            "--new-key",
            str(current),
            "--device",
            "gate-01",
        ],
        "the new key is the current key",
    )
    _fails(cli, ["cloud", "export-assets", str(tmp_path)], "existing folder")


def test_a_bad_key_never_reaches_a_gateway(cli: CliRunner, tmp_path: Path) -> None:
    doc = {
        "device": {"site": "riverside", "id": "gate-01"},
        "outbox": {"path": str(tmp_path / "state" / "outbox.db")},
        "commands": {"public_key": "not-a-key"},
    }
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(doc))
    _fails(cli, ["edge", "check-config", str(path)], "commands.public_key", "not a public key")
    doc["commands"] = {"public_key": private_key_pem(generate_key()).decode()}
    path.write_text(yaml.safe_dump(doc))
    r = cli.invoke(app, ["edge", "check-config", str(path)])
    assert r.exit_code == 2 and "PRIVATE key" in r.output and "BEGIN" not in r.output.split("PRIVATE key")[1][:5]
    doc["commands"] = {}
    path.write_text(yaml.safe_dump(doc))
    r = cli.invoke(app, ["edge", "check-config", str(path)])
    assert r.exit_code == 0 and "warning: no commands, documents key" in r.output
    shown = cli.invoke(app, ["edge", "trust", "--config", str(path)])
    assert shown.exit_code == 0 and "(none: refuses all)" in shown.output
    assert not (tmp_path / "state").exists()  # looking does not create the agent's database
