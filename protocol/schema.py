"""JSON Schema export: one file per message type, for firmware and third parties."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from protocol.envelope import ENVELOPES
from protocol.errors import Reason
from protocol.limits import MAX_PAYLOAD_BYTES, MAX_READINGS_PER_BATCH, SCHEMA_VERSION
from protocol.messages import BODY_BY_TYPE


def schema_for(type_name: str) -> dict[str, Any]:
    body = BODY_BY_TYPE[type_name]
    schema = ENVELOPES[type_name].model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"civicedge:v{SCHEMA_VERSION}:{type_name}"
    schema["title"] = f"{type_name} message"
    schema["description"] = (body.__doc__ or type_name).strip().splitlines()[0]
    schema["x-channels"] = sorted(c.value for c in body.CHANNELS)
    schema["x-lane"] = body.LANE.value
    return schema


def write_schemas(out: Path) -> list[Path]:
    """Write ``{type}.schema.json`` for every type plus an ``index.json``; return the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in sorted(BODY_BY_TYPE):
        path = out / f"{name}.schema.json"
        path.write_bytes(orjson.dumps(schema_for(name), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        written.append(path)
    index = {
        "schema_version": SCHEMA_VERSION,
        "types": sorted(BODY_BY_TYPE),
        "limits": {"max_payload_bytes": MAX_PAYLOAD_BYTES, "max_readings_per_batch": MAX_READINGS_PER_BATCH},
        "reasons": [r.value for r in Reason],
    }
    path = out / "index.json"
    path.write_bytes(orjson.dumps(index, option=orjson.OPT_INDENT_2))
    written.append(path)
    return written
