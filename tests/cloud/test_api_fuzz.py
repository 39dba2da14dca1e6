"""An API fuzzer (schemathesis) against the cloud's own OpenAPI schema, on SQLite: whatever a client sends, the
answer is never a server error. A few examples per operation here (``CE_FUZZ_EXAMPLES`` runs longer by hand);
``civicedge bench fuzz`` in ``make bench`` runs the same fuzzer with many more."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.fuzz import cloud_schema, fuzz
from simulators.services import ServiceMissing

EXAMPLES = int(os.environ.get("CE_FUZZ_EXAMPLES", "4"))


@pytest.fixture(scope="module")
def schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    work: Path = tmp_path_factory.mktemp("fuzz")
    try:
        with cloud_schema(work) as loaded:
            yield loaded
    except ServiceMissing as exc:
        pytest.fail(f"{exc} (make test installs it when run as root)", pytrace=False)


def test_no_request_makes_a_server_error(schema: Any) -> None:
    """Every operation, with the admin token: a few generated requests each (valid and out-of-range values,
    odd strings); the failures of every operation are reported together."""
    report = fuzz(schema, EXAMPLES)
    assert report.operations > 50 and report.requests >= report.operations
    assert not report.failures, f"{len(report.failures)} operations answered 5xx:\n" + "\n".join(report.failures)
