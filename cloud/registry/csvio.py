"""CSV import/export of assets. A bad row is reported with its line number and reason and the good rows
still import (unless ``strict``); rows are upserted by id in large ``executemany`` chunks, so a district of
16,000 covers imports in seconds."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from cloud.ingest.store import now_ms
from cloud.registry.catalog import ASSET_KINDS, COVER_SUBTYPES
from cloud.registry.tables import assets, confidential_subtypes, departments, grid_cells

#: a cell a spreadsheet would run as a formula starts with one of these (OWASP "CSV injection")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "＝", "＋", "－", "＠")  # the full-width ones too
COLUMNS = ("id", "kind", "subtype", "department_id", "grid_cell_id", "lat", "lon", "device_id", "install_date", "notes")
CHUNK = 2000


class AssetRow(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    kind: str
    subtype: str = ""
    department_id: str | None = None
    grid_cell_id: str | None = None
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    device_id: str | None = None
    install_date: str | None = None
    notes: str = Field(default="", max_length=2000)

    @field_validator("department_id", "grid_cell_id", "device_id", "install_date", "lat", "lon", mode="before")
    @classmethod
    def _blank_is_none(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("subtype", "notes", mode="before")
    @classmethod
    def _unquote(cls, v: object) -> object:
        """A cell the export neutralised (``'=…``) reads back as it was."""
        return v[1:] if isinstance(v, str) and v[:1] == "'" and v[1:2] in FORMULA_START else v

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v not in ASSET_KINDS:
            raise ValueError(f"unknown kind {v!r} (one of: {', '.join(ASSET_KINDS)})")
        return v

    @field_validator("install_date")
    @classmethod
    def _date(cls, v: str | None) -> str | None:
        if v is not None:
            date.fromisoformat(v)  # raises a readable ValueError
        return v

    def check(self) -> None:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("a location needs both lat and lon (or neither)")
        if self.kind == "manhole_cover" and self.subtype not in COVER_SUBTYPES:
            raise ValueError(f"unknown cover subtype {self.subtype!r} (one of: {', '.join(COVER_SUBTYPES)})")


@dataclass
class ImportReport:
    rows: int = 0
    imported: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)
    warnings: list[tuple[int, str]] = field(default_factory=list)  # imported, but worth a look
    rejected: bool = False
    lines: list[int] = field(default_factory=list)  # the line of each good row, in order

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "imported": self.imported,
            "rejected_file": self.rejected,
            "errors": [{"line": n, "reason": r} for n, r in self.errors],
            "warnings": [{"line": n, "reason": r} for n, r in self.warnings],
        }


def _reason(exc: ValidationError) -> str:
    e = exc.errors()[0]
    field_ = ".".join(str(x) for x in e["loc"]) or "row"
    return f"{field_}: {e['msg'].removeprefix('Value error, ')}"


def parse(
    source: str | Iterable[str], known_departments: set[str], known_cells: set[str], report: ImportReport
) -> Iterator[AssetRow]:
    """``source``: the whole file as text (a quoted field may hold line breaks), or its lines with their endings."""
    reader = csv.DictReader(io.StringIO(source, newline="") if isinstance(source, str) else source)
    missing = [c for c in ("id", "kind") if c not in (reader.fieldnames or [])]
    if missing:
        report.errors.append((1, f"header lacks column(s) {', '.join(missing)}; expected {','.join(COLUMNS)}"))
        report.rejected = True
        return
    unknown_cols = [c for c in reader.fieldnames or [] if c not in COLUMNS]
    if unknown_cols:
        report.errors.append((1, f"unknown column(s) {', '.join(unknown_cols)}; expected {','.join(COLUMNS)}"))
        report.rejected = True
        return
    seen: set[str] = set()
    records = iter(reader)
    while True:
        try:
            rec = next(records)
        except StopIteration:
            break
        except csv.Error as exc:  # a field past the parser's limit, a stray quote: that row, not the whole import
            report.rows += 1
            report.errors.append((reader.line_num, f"unreadable row: {exc}"))
            continue
        line = reader.line_num
        report.rows += 1
        if None in rec:
            report.errors.append((line, "more fields than the header has columns"))
            continue
        try:
            row = AssetRow.model_validate({k: v for k, v in rec.items() if v is not None})
            row.check()
        except ValidationError as exc:
            report.errors.append((line, _reason(exc)))
            continue
        except ValueError as exc:
            report.errors.append((line, str(exc)))
            continue
        if row.department_id and row.department_id not in known_departments:
            report.errors.append((line, f"department_id: no department {row.department_id!r} (create it first)"))
            continue
        if row.grid_cell_id and row.grid_cell_id not in known_cells:
            report.errors.append((line, f"grid_cell_id: no grid cell {row.grid_cell_id!r} (create it first)"))
            continue
        if row.id in seen:
            report.errors.append((line, f"id: {row.id!r} appears twice in the file"))
            continue
        seen.add(row.id)
        report.lines.append(line)
        for name in ("subtype", "notes"):
            raw = (rec.get(name) or "").strip()  # as the file has it: an exported, neutralised cell starts with '
            if raw.startswith(FORMULA_START):
                report.warnings.append(
                    (
                        line,
                        f"{name}: starts with {raw[0]!r}, which a spreadsheet runs as a formula; stored as text "
                        "and exported with a leading '",
                    )
                )
        yield row


def import_assets(
    engine: Engine,
    lines: str | Iterable[str],
    *,
    strict: bool = False,
    progress: Callable[[int], None] | None = None,
    restricted: bool = False,
) -> ImportReport:
    """Validate every row, then upsert the good ones (all or nothing with ``strict``). ``lines``: the file's text
    (or its lines, with their endings). ``restricted`` (anyone but an admin): rows that would create, overwrite or
    re-fit a confidential asset, or fit another asset to a confidential asset's device, are refused."""
    report = ImportReport()
    with engine.connect() as conn:
        deps = {r[0] for r in conn.execute(select(departments.c.id))}
        cells = {r[0] for r in conn.execute(select(grid_cells.c.id))}
        secret = set(conn.execute(select(confidential_subtypes.c.subtype)).scalars())
        hidden_ids: set[str] = set()
        hidden_devices: set[str] = set()
        if restricted and secret:
            for aid, dev in conn.execute(select(assets.c.id, assets.c.device_id).where(assets.c.subtype.in_(secret))):
                hidden_ids.add(aid)
                if dev:
                    hidden_devices.add(dev)
    rows = list(parse(lines, deps, cells, report))
    if restricted:
        allowed = []
        for line, row in zip(report.lines, rows, strict=True):
            if row.subtype in secret or row.id in hidden_ids:
                report.errors.append((line, f"id: {row.id!r}: confidential assets are imported by an admin"))
            elif row.device_id and row.device_id in hidden_devices:
                report.errors.append((line, f"device_id: {row.device_id!r} is fitted to an asset you cannot change"))
            else:
                allowed.append(row)
        rows = allowed
        report.errors.sort()
    if report.rejected or (strict and report.errors):
        report.rejected = True
        return report
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(assets)
    stmt = stmt.on_conflict_do_update(
        index_elements=["id"],
        set_={c: stmt.excluded[c] for c in (*COLUMNS[1:], "updated_ms")},
    )
    t = now_ms()
    with engine.begin() as conn:
        for i in range(0, len(rows), CHUNK):
            chunk = [{**r.model_dump(), "created_ms": t, "updated_ms": t} for r in rows[i : i + CHUNK]]
            conn.execute(stmt, chunk)
            report.imported += len(chunk)
            if progress:
                progress(len(chunk))
    return report


def export_assets(engine: Engine, where: Any = None) -> Iterator[str]:
    """The registry as CSV, the same columns the import takes (only the rows ``where`` selects, if given)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(COLUMNS)
    yield buf.getvalue()
    with engine.connect() as conn:
        q = select(*[assets.c[c] for c in COLUMNS]).order_by(assets.c.id)
        for r in conn.execute(q if where is None else q.where(where)):
            buf.seek(0)
            buf.truncate()
            w.writerow([neutralise(v) for v in r])
            yield buf.getvalue()


def neutralise(value: object) -> object:
    """A cell as it may be written for a spreadsheet: text that would run as a formula gets a leading ``'``
    (shown, not run; the import takes it off again). Numbers are numbers."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value
