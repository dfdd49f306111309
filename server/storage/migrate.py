"""Schema upgrades through Alembic, callable from the CLI and from tests."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from server.config import PROJECT_ROOT
from server.errors import DatabaseUnreachable, SchemaOutOfDate

MIGRATIONS = PROJECT_ROOT / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Brings the schema to `revision` in one transaction (PostgreSQL) or per step (SQLite)."""
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def ensure_current(engine: Engine) -> None:
    """Refuses to run on a schema that is behind (or ahead of) this code (SchemaOutOfDate),
    or on a database that does not answer (DatabaseUnreachable)."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    except (OperationalError, InterfaceError) as error:
        url = engine.url.render_as_string(hide_password=True)
        reason = str(error.orig).strip().splitlines()[0]
        raise DatabaseUnreachable(
            f"cannot reach the database at {url}: {reason} (MPLUS_DATABASE_URL)"
        ) from None
    if current != head:
        raise SchemaOutOfDate(
            f"database schema is at revision {current or 'none'}, expected {head}: "
            "run `mplus db upgrade` first"
        )
