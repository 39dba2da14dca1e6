"""Alembic environment: runs on the connection handed in by ``cloud.db.engine.migrate`` (or a URL)."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from cloud.db import (  # noqa: F401 - register their tables
    schema_auth,
    schema_gate,
    schema_provisioning,
    schema_registry,
    schema_rules,
    schema_updates,
    schema_workorders,
)
from cloud.db.schema import metadata

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
