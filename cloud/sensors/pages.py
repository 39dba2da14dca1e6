"""The community sensors page: perimeter zones (armed or not, tripped, the last intrusion), gas levels against
their alarm levels, objects thrown from buildings with their frame strips, and each household's hourly water
consumption as a chart."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from cloud.api.deps import Service
from cloud.console.app import Session
from cloud.console.render import render
from cloud.sensors import queries

router = APIRouter(prefix="/console", include_in_schema=False)
DAY_MS = 86_400_000
GAS = re.compile(r"^gas\.(?P<detector>[^.]+)\.lel$")
ZONE = re.compile(r"^perimeter\.(?P<zone>[^.]+)\.armed$")
WATER = re.compile(r"^water\.(?P<meter>[^.]+)\.hourly_l$")


@router.get("/sensors", response_class=HTMLResponse)
def sensors(request: Request, svc: Service, page: Session) -> HTMLResponse:
    page.need("sensors.view")
    with svc.engine.connect() as conn:
        devices = list(queries.community_devices(conn))
        alarms = queries.alarms_of(conn, page.user, devices)
        gas_rows = queries.latest_metrics(conn, devices, "gas.")
        zone_rows = queries.latest_metrics(conn, devices, "perimeter.")
        water_rows = queries.latest_metrics(conn, devices, "water.")
        # the alarm comes on the priority lane, its picture after it on the bulk lane: until it is stored the
        # page says so instead of showing a broken image
        # a picture is the alarm's device's own: another device's picture under the same ref is not this one
        refs = {r for a in alarms for k in ("snapshot_ref", "frames_ref") if (r := (a["details"] or {}).get(k))}
        stored = queries.stored_pictures(conn, refs)
    open_keys = {a["key"] for a in alarms if a["state"] != "cleared"}
    gas = []
    for r in gas_rows:
        if m := GAS.match(r["metric"]):
            det = m["detector"]
            level = next((lv for lv in ("high", "low") if f"gas.{det}.{lv}" in open_keys), "normal")
            fault = f"gas.{det}.fault" in open_keys or f"gas.{det}.end_of_life" in open_keys
            gas.append({**r, "detector": det, "level": level, "fault": fault, "pct": min(100.0, r["value"] * 2)})
    zones = []
    for r in zone_rows:
        if m := ZONE.match(r["metric"]):
            z = m["zone"]
            last = next(
                (a for a in alarms if a["key"] == f"perimeter.{z}.intrusion" and a["device_id"] == r["device_id"]), None
            )
            zones.append(
                {
                    "device_id": r["device_id"],
                    "zone": z,
                    "armed": r["value"] >= 0.5,
                    "alarm": f"perimeter.{z}.intrusion" in open_keys,
                    "tamper": f"perimeter.{z}.tamper" in open_keys,
                    "last": last,
                }
            )
    throws = [a for a in alarms if a["code"] == "throwing"][:12]
    meters = []
    for r in water_rows:
        if m := WATER.match(r["metric"]):
            mid = m["meter"]
            meters.append(
                {
                    **r,
                    "meter": mid,
                    "alarms": [a for a in alarms if a["key"].startswith(f"water.{mid}.") and a["state"] != "cleared"],
                }
            )
    return render(
        request,
        "sensors.html",
        page.user,
        page.csrf,
        gas=sorted(gas, key=lambda g: g["detector"]),
        zones=sorted(zones, key=lambda z: (z["device_id"], z["zone"])),
        throws=throws,
        meters=sorted(meters, key=lambda m: m["meter"]),
        day_ms=DAY_MS,
        stored=stored,
    )
