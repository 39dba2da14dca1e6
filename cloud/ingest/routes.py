"""The routing table: every domain's ingestion handlers, by message body type."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from cloud.alarms import ingest as alarms
from cloud.devices import ingest as devices
from cloud.elevators import ingest as elevators
from cloud.gate import ingest as gate
from cloud.ingest.routing import Handler, LogBody
from cloud.sensors import ingest as sensors
from cloud.updates import ingest as updates

DOMAINS = (devices, alarms, sensors, elevators, gate, updates)


def _merge(tables: list[Mapping[type, Handler]]) -> dict[type, tuple[Handler, ...]]:
    out: dict[type, tuple[Handler, ...]] = {}
    for table in tables:
        for body, handler in table.items():
            out[body] = (*out.get(body, ()), handler)
    return out


#: body type → the handlers of the domains that own it (in the order of DOMAINS)
ROUTES: Mapping[type, tuple[Handler, ...]] = MappingProxyType(_merge([d.HANDLERS for d in DOMAINS]))
#: body type → how it is kept in the message log, where a domain keeps part of it elsewhere (or never)
LOG_BODIES: Mapping[type, LogBody] = MappingProxyType(
    {body: fn for d in DOMAINS for body, fn in getattr(d, "LOG_BODIES", {}).items()}
)
