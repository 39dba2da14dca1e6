"""Fresh databases for a benchmark: a SQLite file in the run's directory, or a PostgreSQL database of its own on
the server at ``CE_BENCH_PG_ADMIN`` (dropped when the benchmark ends)."""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path

PG_ADMIN_ENV = "CE_BENCH_PG_ADMIN"
PG_ADMIN_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"
ENGINES = ("sqlite", "postgresql")
_names = itertools.count()


def pg_admin() -> str:
    """The server's admin URL: CE_BENCH_PG_ADMIN, else the tests' CE_TEST_PG_ADMIN, else the local default."""
    return os.environ.get(PG_ADMIN_ENV) or os.environ.get("CE_TEST_PG_ADMIN") or PG_ADMIN_DEFAULT


@contextlib.contextmanager
def fresh_database(kind: str, work: Path, label: str) -> Iterator[str]:
    """The URL of an empty database of ``kind`` (``sqlite`` or ``postgresql``), gone afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{work / f'{label}-{next(_names)}.db'}"
        return
    import psycopg

    admin = pg_admin()
    name = f"ce_bench_{label}_{os.getpid()}_{int(time.time())}_{next(_names)}"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        raise RuntimeError(
            f"PostgreSQL is not reachable at {admin} ({exc}); start it (make services) or set {PG_ADMIN_ENV}"
        ) from None
    try:
        yield f"{admin.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
