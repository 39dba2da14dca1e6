"""Structured, quiet-by-default logging: ``ts level logger message key=value …`` or JSON lines."""

from __future__ import annotations

import logging
import sys
import time

import orjson

_STD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class KeyValueFormatter(logging.Formatter):
    def __init__(self, json_lines: bool = False) -> None:
        super().__init__()
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        extras = {k: v for k, v in vars(record).items() if k not in _STD}
        if self.json_lines:
            doc = {
                "ts": round(record.created, 3),
                "level": record.levelname.lower(),
                "logger": record.name,
                "msg": record.getMessage(),
                **extras,
            }
            if record.exc_info:
                doc["exc"] = self.formatException(record.exc_info)
            return orjson.dumps(doc, default=str).decode()
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        kv = " ".join(f"{k}={v!r}" if isinstance(v, str) and " " in v else f"{k}={v}" for k, v in extras.items())
        line = f"{ts} {record.levelname.lower():7} {record.name} {record.getMessage()}" + (f" {kv}" if kv else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level: str = "warning", json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter(json_lines))
    root = logging.getLogger("civicedge")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    # pymodbus logs every late or unmatched frame as an error with a frame dump; the lift unit reports
    # transport failures itself (counted, retried, an alarm when the PLC stays silent)
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
