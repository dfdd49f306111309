"""queued_messages rows straight to the driver: executemany, or COPY on PostgreSQL.

Apart from `messages.py` because it works below SQLAlchemy's compiler: bind processors run
by hand, the driver's own COPY, errors translated and writes counted as SQLAlchemy would."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import Connection, Dialect
from sqlalchemy.exc import DBAPIError

from server.storage.tables import queued_messages
from server.storage.writes import wrote

_BULK_COLUMNS = (
    "message_uuid", "batch_uuid", "account_id", "client_id", "submitted_id", "fingerprint",
    "destination", "sender_type", "sender", "body", "callback", "channels", "channels_given",
    "send_at", "due_at", "scheduled", "status", "created_at",
)  # fmt: skip


def _identity(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class BulkInsert:
    """queued_messages rows as positional tuples straight to the driver: sqlite3's
    `executemany`; on PostgreSQL psycopg's pipelined `executemany` for a few rows and `COPY`
    for many (a fraction of the server's work per row)."""

    statement: str
    copy: str | None
    """PostgreSQL's COPY statement; None elsewhere."""
    stamp: Callable[[datetime], Any]
    channels: Callable[[list[str]], Any]
    flag: Mapping[bool, Any]

    _by_dialect: ClassVar[dict[tuple[str, str], BulkInsert]] = {}

    @classmethod
    def for_dialect(cls, dialect: Dialect) -> BulkInsert:
        key = (dialect.name, dialect.driver)
        if key not in cls._by_dialect:
            marker = "?" if dialect.paramstyle == "qmark" else "%s"
            columns = queued_messages.c

            def processor(name: str) -> Callable[[Any], Any]:
                return columns[name].type.dialect_impl(dialect).bind_processor(dialect) or _identity

            flag = processor("channels_given")
            cls._by_dialect[key] = cls(
                statement=f"INSERT INTO {queued_messages.name} ({', '.join(_BULK_COLUMNS)}) "
                f"VALUES ({', '.join(marker for _ in _BULK_COLUMNS)})",
                copy=f"COPY {queued_messages.name} ({', '.join(_BULK_COLUMNS)}) FROM STDIN"
                if dialect.name == "postgresql"
                else None,
                stamp=processor("due_at"),
                channels=processor("channels"),
                flag={True: flag(True), False: flag(False)},
            )
        return cls._by_dialect[key]

    def execute(self, connection: Connection, rows: list[tuple[Any, ...]]) -> None:
        if self.copy is None or len(rows) < COPY_FROM_ROWS:
            # Through the connection: its error translation and the deadline's statement
            # hook apply as to any other statement.
            connection.exec_driver_sql(self.statement, rows)
        else:
            _copy(connection, self.copy, rows)
        wrote(connection)  # around SQLAlchemy's compiler, which counts the rest


COPY_FROM_ROWS = 10
"""On PostgreSQL, a request of this many messages or more is stored by COPY."""


def _copy(connection: Connection, statement: str, rows: list[tuple[Any, ...]]) -> None:
    """COPY on the driver's own connection. A statement through SQLAlchemy first lets the
    deadline's hook bound it (its SET LOCAL statement_timeout holds for the rest of the
    transaction), and the driver's errors become SQLAlchemy's, as for any other statement."""
    connection.exec_driver_sql("SELECT 1")
    driver = connection.connection.driver_connection
    assert driver is not None
    dbapi_error = connection.dialect.loaded_dbapi.Error
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(row)
    except dbapi_error as error:
        raise DBAPIError.instance(
            statement, None, error, dbapi_error, hide_parameters=True, dialect=connection.dialect
        ) from error
