"""An API fuzzer (schemathesis) against the cloud's own OpenAPI schema, on SQLite: whatever a client sends, the
answer is never a server error. A few examples per operation here; ``CE_FUZZ_EXAMPLES`` runs longer by hand."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from cloud.api.app import create_app
from cloud.service import CloudService
from cloud.settings import Settings
from simulators.services import Mosquitto
from tests.conftest import _require

TOKEN = "admin:fuzz-token-0000000001"
EXAMPLES = int(os.environ.get("CE_FUZZ_EXAMPLES", "4"))


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, str]]]:
    work: Path = tmp_path_factory.mktemp("fuzz")
    broker = _require(lambda: Mosquitto(workdir=work / "mosquitto"))  # commands publish for real (to no one)
    broker.start()
    settings_ = Settings(
        database_url=f"sqlite:///{work / 'cloud.db'}",
        broker_url=broker.url,
        command_key_file=work / "key.pem",
        update_key_file=work / "update-key.pem",
        media_dir=work / "media",
        api_tokens=[TOKEN],
        _env_file=None,
    )
    app = create_app(service=CloudService(settings_))
    try:
        with TestClient(app):  # runs the start-up: migrations, the service, its broker connections
            schema = schemathesis.openapi.from_asgi("/openapi.json", app)
            yield schema, {"Authorization": f"Bearer {TOKEN.split(':', 1)[1]}"}
    finally:
        broker.close()


def test_no_request_makes_a_server_error(api: tuple[Any, dict[str, str]]) -> None:
    """Every operation, with the admin token: a few generated requests each (valid and out-of-range values,
    odd strings); the failures of every operation are reported together."""
    schema, headers = api
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        op = result.ok()
        operations += 1

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        @given(case=op.as_strategy() | op.as_strategy(GenerationMode.NEGATIVE))  # valid, and what the schema refuses
        def fuzz(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=[not_a_server_error])

        try:
            fuzz()
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis reports failures as an exception group
            failures.append(f"{op.method.upper()} {op.path}: {str(exc).strip().splitlines()[0][:300]}")
    assert operations > 50
    assert not failures, f"{len(failures)} operations answered 5xx:\n" + "\n".join(failures)
