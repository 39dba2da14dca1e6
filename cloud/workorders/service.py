"""Work-order lifecycle, department routing from the asset registry, SLA due times, photos."""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Engine, select, update

from cloud.images import ImageRefused, open_image
from cloud.ingest.store import now_ms
from cloud.registry.confidential import is_confidential
from cloud.registry.tables import assets, departments
from cloud.workorders.tables import work_order_history, work_order_photos, work_orders

#: hours to resolve, by priority (the SLA clock starts when the order is created)
SLA_HOURS: Final = {"urgent": 4, "high": 24, "normal": 72, "low": 168}
MAX_PHOTO_BYTES: Final = 10 * 1024 * 1024
THUMB_PX: Final = 256
#: allowed transitions: state → {action: new state}
FLOW: Final = {
    "reported": {"dispatch": "dispatched"},
    "dispatched": {"dispatch": "dispatched", "accept": "accepted"},
    "accepted": {"resolve": "resolved"},
    "resolved": {"close": "closed", "reopen": "dispatched"},
    "closed": {"reopen": "dispatched"},
}


NEAREST_MAX_M: Final = 300.0  # a grid worker's report is matched to an asset at most this far away


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine), metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6_371_000 * math.asin(math.sqrt(a))


class WorkOrderError(ValueError):
    """A request the lifecycle does not allow; the message says why and what would work."""


class WorkOrders:
    def __init__(self, engine: Engine, media_dir: Path) -> None:
        self.engine = engine
        self.media_dir = media_dir

    def create(
        self,
        *,
        title: str,
        source: str,
        priority: str = "normal",
        description: str = "",
        asset_id: str | None = None,
        device_id: str | None = None,
        alarm_id: int | None = None,
        rule_id: str | None = None,
        reporter: str = "",
        lat: float | None = None,
        lon: float | None = None,
    ) -> dict[str, Any]:
        """Open an order; if the asset (given, or linked to the device) has an owner, dispatch it there."""
        if priority not in SLA_HOURS:
            raise WorkOrderError(f"priority must be one of {', '.join(SLA_HOURS)}")
        t = now_ms()
        with self.engine.begin() as conn:
            asset = None
            if asset_id:
                asset = conn.execute(select(assets).where(assets.c.id == asset_id)).first()
                if asset is None:
                    raise WorkOrderError(f"no asset {asset_id!r}")
            elif device_id:
                asset = conn.execute(select(assets).where(assets.c.device_id == device_id)).first()
            dept = asset.department_id if asset is not None else None
            suggested: tuple[str, float] | None = None
            if asset is None and lat is not None and lon is not None:
                suggested = self._nearest(conn, lat, lon)
            values = {
                "title": title,
                "description": description,
                "source": source,
                "rule_id": rule_id,
                "asset_id": asset.id if asset is not None else None,
                "device_id": device_id,
                "alarm_id": alarm_id,
                "department_id": dept,
                "grid_cell_id": asset.grid_cell_id if asset is not None else None,
                "priority": priority,
                "state": "dispatched" if dept else "reported",
                "reporter": reporter,
                "lat": lat if lat is not None else (asset.lat if asset is not None else None),
                "lon": lon if lon is not None else (asset.lon if asset is not None else None),
                "created_ms": t,
                "due_ms": t + int(self._sla_hours(conn, dept, priority) * 3_600_000),
                "updated_ms": t,
                "resolution_note": "",
                "suggested_asset_id": suggested[0] if suggested else None,
                "suggested_distance_m": round(suggested[1], 1) if suggested else None,
            }
            wo_id = conn.execute(work_orders.insert().values(**values).returning(work_orders.c.id)).scalar_one()
            self._history(conn, wo_id, "reported", reporter or source, description[:500])
            if dept:
                self._history(conn, wo_id, "dispatched", "registry", f"owner of {asset.id}: {dept}")  # type: ignore[union-attr]
        return self.get(wo_id)

    def _sla_hours(self, conn: Any, department_id: str | None, priority: str) -> float:
        """The department's own SLA for this priority if it has one, else the default."""
        if department_id:
            row = conn.execute(select(departments.c.sla_hours).where(departments.c.id == department_id)).first()
            if row is not None and row.sla_hours and priority in row.sla_hours:
                return float(row.sla_hours[priority])
        return float(SLA_HOURS[priority])

    def _nearest(self, conn: Any, lat: float, lon: float) -> tuple[str, float] | None:
        """The closest registered asset within NEAREST_MAX_M (a bounding box first, then exact distance)."""
        d_lat = NEAREST_MAX_M / 111_000
        d_lon = d_lat / max(0.1, math.cos(math.radians(lat)))
        rows = conn.execute(
            select(assets.c.id, assets.c.lat, assets.c.lon).where(
                assets.c.lat.between(lat - d_lat, lat + d_lat),
                assets.c.lon.between(lon - d_lon, lon + d_lon),
                # a report must not locate what the registry keeps confidential
                ~is_confidential(),
            )
        )
        best = min(((r.id, distance_m(lat, lon, r.lat, r.lon)) for r in rows), key=lambda x: x[1], default=None)
        return best if best is not None and best[1] <= NEAREST_MAX_M else None

    def open_for(self, rule_id: str, device_id: str) -> int | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(work_orders.c.id).where(
                    work_orders.c.rule_id == rule_id,
                    work_orders.c.device_id == device_id,
                    work_orders.c.state != "closed",
                )
            ).first()
        return None if row is None else int(row.id)

    def _history(self, conn: Any, wo_id: int, action: str, by: str, note: str = "") -> None:
        conn.execute(
            work_order_history.insert().values(work_order_id=wo_id, at_ms=now_ms(), action=action, by=by, note=note)
        )

    def get(self, wo_id: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(select(work_orders).where(work_orders.c.id == wo_id)).first()
            if row is None:
                raise LookupError(f"no work order {wo_id}")
            d = dict(row._mapping)
            d["overdue"] = d["state"] not in ("resolved", "closed") and d["due_ms"] < now_ms()
            d["photos"] = [
                dict(p._mapping)
                for p in conn.execute(
                    select(
                        work_order_photos.c.id,
                        work_order_photos.c.stage,
                        work_order_photos.c.width,
                        work_order_photos.c.height,
                        work_order_photos.c.by,
                        work_order_photos.c.created_ms,
                    )
                    .where(work_order_photos.c.work_order_id == wo_id)
                    .order_by(work_order_photos.c.id)
                )
            ]
            d["history"] = [
                dict(h._mapping)
                for h in conn.execute(
                    select(work_order_history)
                    .where(work_order_history.c.work_order_id == wo_id)
                    .order_by(work_order_history.c.id)
                )
            ]
        return d

    def act(self, wo_id: int, action: str, by: str, note: str = "", department_id: str | None = None) -> dict[str, Any]:
        wo = self.get(wo_id)
        nxt = FLOW.get(wo["state"], {}).get(action)
        if nxt is None:
            allowed = ", ".join(FLOW.get(wo["state"], {})) or "none"
            raise WorkOrderError(f"cannot {action} a {wo['state']} work order (allowed: {allowed})")
        vals: dict[str, Any] = {"state": nxt, "updated_ms": now_ms()}
        if action == "dispatch":
            if not (department_id or wo["department_id"]):
                raise WorkOrderError("dispatch needs a department_id (the asset has no owner in the registry)")
            vals["department_id"] = department_id or wo["department_id"]
            with self.engine.connect() as conn:
                if not conn.execute(select(departments.c.id).where(departments.c.id == vals["department_id"])).first():
                    raise WorkOrderError(f"no department {vals['department_id']!r}")
                vals["due_ms"] = wo["created_ms"] + int(
                    self._sla_hours(conn, vals["department_id"], wo["priority"]) * 3_600_000
                )
        if action == "resolve":
            if not any(p["stage"] == "after" for p in wo["photos"]):
                raise WorkOrderError("resolve needs at least one 'after' photo (POST …/photos?stage=after)")
            vals["resolution_note"] = note
        with self.engine.begin() as conn:
            conn.execute(update(work_orders).where(work_orders.c.id == wo_id).values(**vals))
            self._history(conn, wo_id, nxt if action != "reopen" else "reopened", by, note)
        return self.get(wo_id)

    def add_photo(self, wo_id: int, stage: str, data: bytes, by: str) -> dict[str, Any]:
        """Store a photo re-encoded as JPEG (which drops EXIF, GPS included) with a thumbnail."""
        if stage not in ("before", "after"):
            raise WorkOrderError("stage must be 'before' or 'after'")
        if len(data) > MAX_PHOTO_BYTES:
            raise WorkOrderError(f"photo larger than {MAX_PHOTO_BYTES // (1024 * 1024)} MB")
        self.get(wo_id)
        try:
            img = open_image(data)
        except ImageRefused as exc:
            raise WorkOrderError(f"photo: {exc}") from None
        rgb = img.convert("RGB")
        folder = self.media_dir / "work-orders" / str(wo_id)
        folder.mkdir(parents=True, exist_ok=True)
        name = uuid.uuid4().hex
        path, thumb = folder / f"{name}.jpg", folder / f"{name}.thumb.jpg"
        rgb.save(path, "JPEG", quality=88)  # a fresh file: no EXIF carried over
        small = rgb.copy()
        small.thumbnail((THUMB_PX, THUMB_PX))
        small.save(thumb, "JPEG", quality=80)
        with self.engine.begin() as conn:
            pid = conn.execute(
                work_order_photos.insert()
                .values(
                    work_order_id=wo_id,
                    stage=stage,
                    path=str(path),
                    thumb_path=str(thumb),
                    width=img.width,
                    height=img.height,
                    size=path.stat().st_size,
                    created_ms=now_ms(),
                    by=by,
                )
                .returning(work_order_photos.c.id)
            ).scalar_one()
            self._history(conn, wo_id, f"photo_{stage}", by)
        return {"id": pid, "stage": stage, "width": rgb.width, "height": rgb.height}

    def photo_path(self, wo_id: int, photo_id: int, thumb: bool) -> Path:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(work_order_photos).where(
                    work_order_photos.c.id == photo_id, work_order_photos.c.work_order_id == wo_id
                )
            ).first()
        if row is None:
            raise LookupError(f"no photo {photo_id} on work order {wo_id}")
        return Path(row.thumb_path if thumb else row.path)
