"""A batch's rows into the database, one statement each, per dialect: the message log, the readings, the devices'
last-seen times. Used inside the batch's transaction by :class:`cloud.ingest.store.Store`.

Rows go straight to the driver: building SQLAlchemy parameters for each of tens of thousands of rows a second
costs more than the insert itself.

- PostgreSQL: the log as one ``INSERT … SELECT FROM json_to_recordset`` of the batch as one JSON text (a
  multi-row VALUES is a new statement text for every batch size; arrays are adapted value by value), the
  readings by ``COPY`` (its executemany sends and parses one statement per row), last-seen as one
  ``UPDATE … FROM unnest``.
- SQLite: the log, the readings and last-seen each as one statement over the batch's rows as a JSON array. The driver's
  executemany lets go of the interpreter around every row and must win it back from the worker's other threads
  each time (the network thread, the next batch's validation), which on a busy worker costs many times the
  insert; one statement lets go once. The values arrive exactly: JSON numbers as the shortest text that reads
  back the same double.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import orjson

from cloud.ingest.routing import Reading

READING_COLUMNS = "device_id, metric, ts, value, unit, msg_id"
MESSAGE_COLUMNS = ("msg_id", "site_id", "device_id", "type", "channel", "seq", "device_ts", "received_ms", "body")

_PG_INSERT_MESSAGES = (
    f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)}) "
    "SELECT m, si, d, ty, ch, sq, ts, r, b::json FROM json_to_recordset(%s::json) "
    "AS u(m text, si text, d text, ty text, ch text, sq bigint, ts bigint, r bigint, b text) "
    "ON CONFLICT (msg_id) DO NOTHING RETURNING msg_id"
)
_PG_COPY_READINGS = f"COPY telemetry ({READING_COLUMNS}) FROM STDIN"
_PG_TOUCH = (
    "UPDATE devices AS d SET last_seen_ms = u.seen FROM unnest(%s::text[], %s::bigint[]) AS u(id, seen) "
    "WHERE d.id = u.id AND (d.last_seen_ms IS NULL OR d.last_seen_ms < u.seen)"
)
_SQLITE_TOUCH_ONE = "UPDATE devices SET last_seen_ms = ? WHERE id = ? AND (last_seen_ms IS NULL OR last_seen_ms < ?)"


def _sqlite_columns(n: int) -> str:
    """The first ``n`` elements of each JSON array ``json_each`` yields, as columns."""
    if sqlite3.sqlite_version_info >= (3, 38):
        return ", ".join(f"value ->> {i}" for i in range(n))
    return ", ".join(f"json_extract(value, '$[{i}]')" for i in range(n))  # older SQLite (before ->>)


def _sqlite_readings_insert() -> str:
    """The readings given as one JSON array of [device, metric, ts, value, unit, msg]."""
    return f"INSERT INTO telemetry ({READING_COLUMNS}) SELECT {_sqlite_columns(6)} FROM json_each(?)"


def _sqlite_log_insert() -> str:
    """The log given as one JSON array of [msg_id, site, device, type, channel, seq, device_ts, received, body
    as JSON text] (``WHERE true``: SQLite's grammar for an upsert from a SELECT)."""
    return (
        f"INSERT INTO messages ({', '.join(MESSAGE_COLUMNS)}) SELECT {_sqlite_columns(9)} FROM json_each(?) "
        "WHERE true ON CONFLICT (msg_id) DO NOTHING RETURNING msg_id"
    )


def _sqlite_touch() -> str | None:
    """Last-seen given as one JSON array of [device, ms] (UPDATE … FROM needs SQLite 3.33; None: one by one)."""
    if sqlite3.sqlite_version_info < (3, 33):
        return None
    return (
        "UPDATE devices SET last_seen_ms = json_extract(u.value, '$[1]') FROM json_each(?) AS u "
        "WHERE devices.id = json_extract(u.value, '$[0]') "
        "AND (devices.last_seen_ms IS NULL OR devices.last_seen_ms < json_extract(u.value, '$[1]'))"
    )


def _json_text(value: Any) -> str:
    """A message body as JSON text (bodies come from the protocol's models: plain JSON types)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # what orjson does not take (an integer beyond 64 bits): the standard library's way
        return json.dumps(value)


class BulkWriter:
    """The three bulk statements of a batch for one dialect (``postgresql`` or ``sqlite``)."""

    def __init__(self, dialect: str) -> None:
        self.postgres = dialect == "postgresql"
        self._readings_sql = _sqlite_readings_insert()
        self._log_sql = _sqlite_log_insert()
        self._touch_sql = _sqlite_touch()

    def messages(self, conn: Any, rows: list[dict[str, Any]]) -> set[str]:
        """Log ``rows`` in ``messages``; the ids that were new (a message id stored before is skipped)."""
        if not self.postgres:
            # each body as JSON text inside the array: stored as the text it was written as
            values = [[*(r[c] for c in MESSAGE_COLUMNS[:-1]), _json_text(r["body"])] for r in rows]
            return {r[0] for r in conn.exec_driver_sql(self._log_sql, (_json_text(values),))}
        keys = ("m", "si", "d", "ty", "ch", "sq", "ts", "r")
        # the batch as one JSON parameter (the driver adapts one string, not nine arrays value by value); each body
        # is JSON text inside it, so the server stores the text the device's values were written as
        records = [
            {**dict(zip(keys, (r[c] for c in MESSAGE_COLUMNS[:-1]), strict=True)), "b": _json_text(r["body"])}
            for r in rows
        ]
        return {r[0] for r in conn.exec_driver_sql(_PG_INSERT_MESSAGES, (_json_text(records),))}

    def readings(self, conn: Any, readings: list[Reading]) -> None:
        """The batch's readings into ``telemetry``."""
        if not self.postgres:
            conn.exec_driver_sql(self._readings_sql, (orjson.dumps(readings).decode(),))
            return
        dbapi = conn.connection.driver_connection  # psycopg's own connection, in this transaction
        with dbapi.cursor() as cur, cur.copy(_PG_COPY_READINGS) as copy:
            for row in readings:
                copy.write_row(row)

    def touch(self, conn: Any, seen: list[tuple[str, int]]) -> None:
        """Each device's ``last_seen_ms`` moved on to when it was last heard in the batch (never back), devices
        in id order (a statement per device was a quarter of a busy district's ingestion)."""
        if self.postgres:
            conn.exec_driver_sql(_PG_TOUCH, ([d for d, _ in seen], [ms for _, ms in seen]))
        elif self._touch_sql is not None:
            conn.exec_driver_sql(self._touch_sql, (orjson.dumps(seen).decode(),))
        else:
            conn.exec_driver_sql(_SQLITE_TOUCH_ONE, [(ms, d, ms) for d, ms in seen])
