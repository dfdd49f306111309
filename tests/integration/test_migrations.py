"""Alembic migrations produce exactly the schema the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

from server.storage.database import create_database_engine
from server.storage.migrate import SchemaOutOfDate, ensure_current, upgrade
from server.storage.tables import metadata


def test_the_migrated_schema_matches_the_tables(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, metadata) == []


def test_the_service_refuses_a_database_that_is_not_migrated(database_url: str) -> None:
    engine = create_database_engine(database_url, pool_size=1)
    try:
        with pytest.raises(SchemaOutOfDate, match="mplus db upgrade"):
            ensure_current(engine)
        upgrade(engine)
        ensure_current(engine)  # and accepts it once upgraded
    finally:
        engine.dispose()
