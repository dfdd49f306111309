"""Engines: SQLite (WAL, immediate transactions) by default, PostgreSQL by URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

SQLITE_BUSY_TIMEOUT_MS = 10_000
POSTGRES_STATEMENT_TIMEOUT_MS = 10_000
POSTGRES_LOCK_TIMEOUT_MS = 5_000


def create_database_engine(url: str, pool_size: int = 16) -> Engine:
    """An engine whose transactions are safe under concurrent writers on either database."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, pool_size)
    if parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        timeouts = (
            f"-c statement_timeout={POSTGRES_STATEMENT_TIMEOUT_MS} "
            f"-c lock_timeout={POSTGRES_LOCK_TIMEOUT_MS}"
        )
        return create_engine(
            parsed,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=10,
            pool_pre_ping=True,
            hide_parameters=True,  # message bodies and numbers stay out of error logs
            connect_args={"options": timeouts, "connect_timeout": 5},
        )
    raise SystemExit(f"unsupported database URL {parsed.render_as_string(hide_password=True)}")


def _sqlite_engine(url: str, pool_size: int) -> Engine:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise SystemExit("SQLite needs a file: an in-memory database is not durable")
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=10,
        hide_parameters=True,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from pysqlite so that BEGIN IMMEDIATE below works.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        # Take the write lock up front: a read-then-write transaction can then never fail
        # with "database is locked" halfway, and concurrent requests serialise cleanly.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
