"""INSERT … ON CONFLICT, which SQLAlchemy builds per dialect: one door to both."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite


def upsertable_insert(connection: Connection, table: Any) -> Any:
    """INSERT with ON CONFLICT support, in the dialect of the connection."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
