"""``civicedge bench fuzz``: an API fuzzer (schemathesis) against the cloud's own OpenAPI schema, on SQLite, with
an admin token: every operation gets generated requests, valid ones and ones the schema refuses, and no answer
may be a server error. ``make test`` runs a few examples per operation (``tests/cloud/test_api_fuzz.py``); this
runs as many as asked and prints what it sent, what failed and how long it took."""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TOKEN = "admin:fuzz-token-0000000001"
HEADERS = {"Authorization": f"Bearer {TOKEN.split(':', 1)[1]}"}


@dataclass
class FuzzReport:
    operations: int = 0
    requests: int = 0
    failures: list[str] = field(default_factory=list)  # "METHOD /path: first line of the failure"
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "operations": self.operations,
            "requests": self.requests,
            "failing_operations": len(self.failures),
            "failures": self.failures,
            "requests_per_s": round(self.requests / self.seconds, 1) if self.seconds else 0.0,
            "seconds": round(self.seconds, 1),
        }


@contextlib.contextmanager
def cloud_schema(work: Path) -> Iterator[Any]:
    """A cloud on SQLite and a real Mosquitto (commands publish for real, to no one); yields its loaded schema."""
    import schemathesis
    from fastapi.testclient import TestClient

    from cloud.app import create_app
    from cloud.service import CloudService
    from cloud.settings import Settings
    from simulators.services import Mosquitto

    broker = Mosquitto(workdir=work / "mosquitto")
    broker.start()
    try:
        settings = Settings(
            database_url=f"sqlite:///{work / 'cloud.db'}",
            broker_url=broker.url,
            command_key_file=work / "key.pem",
            update_key_file=work / "update-key.pem",
            media_dir=work / "media",
            api_tokens=[TOKEN],
            _env_file=None,
        )
        app = create_app(service=CloudService(settings))
        with TestClient(app):  # the start-up: migrations, the service, its broker connections
            yield schemathesis.openapi.from_asgi("/openapi.json", app)
    finally:
        broker.close()


def fuzz(schema: Any, examples: int, progress: Callable[[int, int, str], None] | None = None) -> FuzzReport:
    """``examples`` generated requests per operation and mode (valid, refused); failures of every operation are
    collected, not stopped at."""
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error

    report = FuzzReport()
    started = time.perf_counter()
    ops = [r.ok() for r in schema.get_all_operations()]
    for i, op in enumerate(ops, 1):
        report.operations += 1
        if progress:
            progress(i, len(ops), f"{op.method.upper()} {op.path}")

        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        @given(case=op.as_strategy() | op.as_strategy(GenerationMode.NEGATIVE))
        def one(case: Any) -> None:
            report.requests += 1
            case.call_and_validate(headers=HEADERS, checks=[not_a_server_error])

        try:
            one()
        except (Exception, BaseExceptionGroup) as exc:  # schemathesis reports failures as an exception group
            report.failures.append(f"{op.method.upper()} {op.path}: {str(exc).strip().splitlines()[0][:300]}")
    report.seconds = time.perf_counter() - started
    return report


def run(examples: int, show_progress: bool = True) -> dict[str, Any]:
    def progress(i: int, n: int, name: str) -> None:
        if show_progress:
            print(f"\r[{i}/{n}] {name[:70]:<70}", end="", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="ce-fuzz-") as tmp, cloud_schema(Path(tmp)) as schema:
        report = fuzz(schema, examples, progress)
    if show_progress:
        print(file=sys.stderr)
    return {"bench": "fuzz", "examples_per_operation": examples, **report.as_dict()}
