"""Locks another connection holds, so that a test may see what waiting for them does."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, select

from server.storage.tables import accounts as accounts_table


@contextmanager
def lock_held(engine: Engine, account_id: str) -> Iterator[None]:
    """Another connection holds a lock that storing a message for `account_id` needs: on
    PostgreSQL the account row (the foreign key check takes a share lock on it), on SQLite the
    database's one write lock. Released on exit."""
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            connection.begin()  # BEGIN IMMEDIATE: the write lock
        else:
            rows = select(accounts_table).where(accounts_table.c.id == account_id)
            connection.execute(rows.with_for_update())
        yield
