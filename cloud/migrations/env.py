"""Alembic environment: runs on the connection handed in by ``cloud.db.engine.migrate`` (or a URL)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from cloud.alarms import tables as _alarms  # noqa: F401 - each domain registers its tables
from cloud.auth import tables as _auth  # noqa: F401
from cloud.db.schema import metadata
from cloud.gate import tables as _gate  # noqa: F401
from cloud.provisioning import tables as _provisioning  # noqa: F401
from cloud.registry import tables as _registry  # noqa: F401
from cloud.rules import tables as _rules  # noqa: F401
from cloud.updates import tables as _updates  # noqa: F401
from cloud.workorders import tables as _workorders  # noqa: F401

config = context.config
target_metadata = metadata


def run() -> None:
    conn = config.attributes.get("connection")
    if conn is None:
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///var/civicedge.db")
        with engine.begin() as c:
            context.configure(connection=c, target_metadata=target_metadata, render_as_batch=True)
            context.run_migrations()
        return
    context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


run()
