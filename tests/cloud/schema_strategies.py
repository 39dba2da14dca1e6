"""Hypothesis strategies that build values from the protocol's own JSON Schemas (the subset pydantic emits).

Every constraint the schema states is honoured, and edges are favoured: strings at their longest, characters
from anywhere in Unicode that the pattern allows, integers at the 64-bit bounds, floats at the extremes,
empty and full collections, free-form objects holding whatever JSON can say.
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import strategies as st

from protocol.limits import INT_MAX, INT_MIN

Schema = dict[str, Any]

#: any JSON value, the hostile end included: integers past 64 bits, control characters, deep nesting
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([INT_MIN, INT_MAX, INT_MAX + 1, 0, -1])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


def from_schema(schema: Schema, root: Schema | None = None) -> st.SearchStrategy[Any]:
    root = root or schema
    if "$ref" in schema:
        return from_schema(root["$defs"][schema["$ref"].rsplit("/", 1)[-1]], root)
    if "anyOf" in schema:
        return st.one_of([from_schema(s, root) for s in schema["anyOf"]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        return _string(schema)
    if kind == "integer":
        lo, hi = schema.get("minimum"), schema.get("maximum")
        edges = [v for v in (lo, hi) if v is not None]
        return st.integers(min_value=lo, max_value=hi) | (st.sampled_from(edges) if edges else st.nothing())
    if kind == "number":
        lo, hi = schema.get("minimum"), schema.get("maximum")
        return st.floats(min_value=lo, max_value=hi, allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        lo, hi = schema.get("minItems", 0), schema.get("maxItems")
        return st.lists(from_schema(schema.get("items", {}), root), min_size=lo, max_size=min(hi or 4, lo + 4))
    if kind == "object":
        return _object(schema, root)
    return json_values  # Any


def _string(schema: Schema) -> st.SearchStrategy[str]:
    lo, hi = schema.get("minLength", 0), schema.get("maxLength", 300)
    pattern = schema.get("pattern")
    base = st.from_regex(pattern, fullmatch=True) if pattern else st.text()

    def fits(s: str) -> bool:
        return lo <= len(s) <= hi and (pattern is None or re.fullmatch(pattern, s) is not None)

    longest = base.filter(bool).map(lambda s: (s * (hi // len(s) + 1))[:hi])
    return st.one_of(base.filter(fits), longest.filter(fits))


def _object(schema: Schema, root: Schema) -> st.SearchStrategy[dict[str, Any]]:
    props: dict[str, Schema] = schema.get("properties", {})
    if props:
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: from_schema(v, root) for k, v in props.items() if k in required},
            optional={k: from_schema(v, root) for k, v in props.items() if k not in required},
        )
    values: Schema | None = None
    keys: st.SearchStrategy[str] = st.text(max_size=16)
    if "patternProperties" in schema:
        pattern, values = next(iter(schema["patternProperties"].items()))
        names = schema.get("propertyNames", {})
        keys = _string({"pattern": pattern, **names})
    elif isinstance(schema.get("additionalProperties"), dict):
        values = schema["additionalProperties"]
    size = min(schema.get("maxProperties", 4), 4)
    return st.dictionaries(keys, from_schema(values, root) if values else json_values, max_size=size)
