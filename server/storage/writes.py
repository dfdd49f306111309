"""The write statements a connection has run, counted: a group commit asks whether a request
that failed had written anything (then its group is undone and run again in savepoints)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, event

_WRITES = "mplus_writes"
"""The count, in the connection's info (its pool record's: it outlives a checkout)."""


def count_writes(engine: Engine) -> None:
    """Counts each INSERT, UPDATE and DELETE that SQLAlchemy compiled; a write that goes
    around the compiler (the bulk insert's driver SQL and COPY) calls `wrote` itself."""

    @event.listens_for(engine, "after_cursor_execute")
    def _compiled(connection: Connection, *args: Any) -> None:
        context = args[3]
        if context.isinsert or context.isupdate or context.isdelete:
            wrote(connection)


def wrote(connection: Connection) -> None:
    connection.info[_WRITES] = connection.info.get(_WRITES, 0) + 1


def writes(connection: Connection) -> int:
    """Only differences mean anything: compare two readings on one connection."""
    return connection.info.get(_WRITES, 0)  # type: ignore[no-any-return]
