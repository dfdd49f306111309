"""Alembic migrations produce exactly the schema the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect

from server.errors import SchemaOutOfDate
from server.storage.database import create_database_engine
from server.storage.migrate import alembic_config, ensure_current, upgrade
from server.storage.tables import metadata


def downgrade(engine: Engine, revision: str) -> None:
    """`upgrade`'s mirror, for tests only: the service never downgrades."""
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def differences_from_the_tables(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))


def test_the_migrated_schema_matches_the_tables(engine: Engine) -> None:
    assert differences_from_the_tables(engine) == []


def test_every_revision_downgrades_and_upgrades_again_to_the_same_schema(engine: Engine) -> None:
    downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(engine)
    assert differences_from_the_tables(engine) == []


def test_the_service_refuses_a_database_that_is_not_migrated(database_url: str) -> None:
    engine = create_database_engine(database_url, pool_size=1)
    try:
        with pytest.raises(SchemaOutOfDate, match="mplus db upgrade"):
            ensure_current(engine)
        upgrade(engine)
        ensure_current(engine)  # and accepts it once upgraded
    finally:
        engine.dispose()
