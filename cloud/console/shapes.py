"""Server-drawn pictures: the asset map (no map tiles are reachable, so assets are plotted by their
coordinates with each grid cell as the box around its assets) and a parking tower's bay grid."""

from __future__ import annotations

import math
from typing import Any

# colours for departments (by order), chosen to stay apart for colour-blind viewers (Okabe–Ito)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
W, H, PAD = 800, 520, 16


def asset_map(points: list[tuple[Any, ...]]) -> dict[str, Any]:
    """``points``: (lat, lon, department, grid cell, asset id). Returns what the template draws: dots, cell
    boxes and a legend, in an equirectangular projection fitted to the points."""
    if not points:
        return {"dots": [], "cells": [], "legend": [], "w": W, "h": H}
    lats = [p[0] for p in points]
    lons = [p[1] for p in points]
    lat0, lat1, lon0, lon1 = min(lats), max(lats), min(lons), max(lons)
    kx = math.cos(math.radians((lat0 + lat1) / 2))  # metres per degree of longitude shrink with latitude
    span_x = max((lon1 - lon0) * kx, 1e-6)
    span_y = max(lat1 - lat0, 1e-6)
    scale = min((W - 2 * PAD) / span_x, (H - 2 * PAD) / span_y)

    def xy(lat: float, lon: float) -> tuple[float, float]:
        return round(PAD + (lon - lon0) * kx * scale, 1), round(H - PAD - (lat - lat0) * scale, 1)

    depts = sorted({str(p[2]) for p in points if p[2]})
    colour = {d: PALETTE[i % len(PALETTE)] for i, d in enumerate(depts)}
    dots = []
    boxes: dict[str, list[float]] = {}
    for lat, lon, dept, cell, aid in points:
        x, y = xy(lat, lon)
        dots.append({"x": x, "y": y, "c": colour.get(str(dept), "#888"), "id": aid})
        if cell:
            b = boxes.setdefault(cell, [x, y, x, y])
            b[0], b[1], b[2], b[3] = min(b[0], x), min(b[1], y), max(b[2], x), max(b[3], y)
    cells = [
        {"id": k, "x": b[0] - 4, "y": b[1] - 4, "w": b[2] - b[0] + 8, "h": b[3] - b[1] + 8}
        for k, b in sorted(boxes.items())
    ]
    return {
        "dots": dots,
        "cells": cells,
        "legend": [{"id": d, "c": c} for d, c in colour.items()],
        "w": W,
        "h": H,
        "r": 4 if len(dots) < 2000 else 1.5,
    }


#: the largest tower the page draws (a bay id beyond these is ignored, not drawn)
MAX_LIFTS, MAX_FLOORS, MAX_BAYS = 16, 200, 64


def bay_grid(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Occupancy from a tower's ``lift.result`` events in time order (bay ids ``lift-floor-bay``): floors top
    down, one column per lift and bay."""
    occupied: set[tuple[int, int, int]] = set()
    seen: set[tuple[int, int, int]] = set()
    for r in results:
        try:
            lift, floor, bay = (int(x) for x in str(r.get("bay") or "").split("-"))
        except ValueError:
            continue
        if not (0 <= lift < MAX_LIFTS and 0 <= floor < MAX_FLOORS and 0 < bay <= MAX_BAYS):
            continue  # no tower is that big: a device's number does not size the page
        key = (lift, floor, bay)
        seen.add(key)
        if r.get("ok"):
            (occupied.add if r.get("kind") == "store" else occupied.discard)(key)
    if not seen:
        return {"floors": [], "columns": [], "occupied": 0, "seen": 0}
    lifts = sorted({k[0] for k in seen})
    floors = list(range(max(k[1] for k in seen), -1, -1))
    bays = range(1, max(k[2] for k in seen) + 1)
    columns = [(lf, b) for lf in lifts for b in bays]
    rows = [{"floor": f, "cells": [(lf, f, b) in occupied for lf, b in columns]} for f in floors]
    return {"floors": rows, "columns": columns, "occupied": len(occupied), "seen": len(seen)}
