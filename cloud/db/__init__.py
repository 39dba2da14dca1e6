"""Storage: SQLAlchemy Core tables, engine set-up and Alembic migrations (SQLite and PostgreSQL)."""
