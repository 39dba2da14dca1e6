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
#: operations whose answer may stay undescribed: the probe's body varies with what is wrong
UNTYPED_OK = {("GET", "/healthz")}


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


def _untyped(schema: dict[str, Any], components: dict[str, Any]) -> bool:
    """An object without declared properties or typed values (``{}`` too), or an array of those."""
    if "$ref" in schema:
        schema = components[schema["$ref"].rsplit("/", 1)[1]]
    if schema.get("type") == "array":
        return _untyped(schema.get("items", {}), components)
    extra = schema.get("additionalProperties", True)
    return schema == {} or (
        schema.get("type") == "object" and "properties" not in schema and not isinstance(extra, dict)
    )


def test_every_json_answer_has_a_schema(tmp_path: Path) -> None:
    """Each operation's success answer is described in /openapi.json (cloud.api.models), so clients, the fuzzer
    and FastAPI's own response check know what comes back; the media route answers an image."""
    from cloud.app import create_app
    from cloud.settings import Settings

    spec = create_app(settings=Settings(database_url=f"sqlite:///{tmp_path / 'cloud.db'}", _env_file=None)).openapi()
    components = spec["components"]["schemas"]
    untyped = [
        f"{method.upper()} {path} {status}"
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        for status, answer in op["responses"].items()
        if status.startswith("2") and (method.upper(), path) not in UNTYPED_OK
        for media, body in answer.get("content", {}).items()
        if media == "application/json" and _untyped(body.get("schema", {}), components)
    ]
    assert not untyped, "operations answering an undescribed object:\n" + "\n".join(untyped)
    media = spec["paths"]["/api/media/{device_id}/{ref}"]["get"]["responses"]["200"]["content"]
    assert set(media) == {"image/jpeg", "image/png"}
