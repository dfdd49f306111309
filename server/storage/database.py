"""Engines: SQLite (WAL, immediate transactions) by default, PostgreSQL by URL."""

from __future__ import annotations

import math
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from server.config import DatabaseTimeouts
from server.errors import ConfigError
from server.storage.errors import DeadlineExceeded
from server.storage.writer_lock import WriterLock, WriterLockTimeout
from server.storage.writes import count_writes

POSTGRES_CONNECT_TIMEOUT_S = 5
DEFAULT_TIMEOUTS = DatabaseTimeouts()
DEADLINE_OPTION = "mplus_deadline"
"""A connection execution option set by a unit of work: the caller's deadline, a
time.monotonic() value, which PostgreSQL statements are bounded by (see below)."""
WRITER_LOCK = "mplus_writer_lock"
"""A SQLite connection's WriterLock, in its pool record's info."""


def create_database_engine(
    url: str, pool_size: int = 16, timeouts: DatabaseTimeouts = DEFAULT_TIMEOUTS
) -> Engine:
    """An engine whose transactions are safe under concurrent writers on either database, and
    whose every wait (pool, lock, statement, idle transaction) is bounded by `timeouts`."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = _sqlite_engine(url, pool_size, timeouts)
    elif parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        options = (
            f"-c statement_timeout={timeouts.statement_ms} "
            f"-c lock_timeout={timeouts.lock_ms} "
            f"-c idle_in_transaction_session_timeout={timeouts.idle_in_transaction_ms}"
        )
        engine = create_engine(
            parsed,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=timeouts.pool_ms / 1000,
            hide_parameters=True,  # message bodies and numbers stay out of error logs
            connect_args={"options": options, "connect_timeout": POSTGRES_CONNECT_TIMEOUT_S},
        )
        _bound_statements_by_deadline(engine, timeouts.statement_ms)
        _ping_after_idle(engine)
    else:
        raise ConfigError(f"unsupported database URL {parsed.render_as_string(hide_password=True)}")
    count_writes(engine)
    return engine


PING_AFTER_IDLE_S = 1.0
LAST_USED = "mplus_last_used"
"""A pooled connection's last return to the pool, a time.monotonic() value, in its info."""


def _ping_after_idle(engine: Engine) -> None:
    """A connection idle for PING_AFTER_IDLE_S is pinged when taken from the pool, and replaced
    if the server has gone (a restart, an idle timeout): the caller never gets a dead one.
    SQLAlchemy's pool_pre_ping pings every checkout, a round trip for every request (7 % of
    a 1-message request's server time on PostgreSQL); a connection used a moment ago is
    alive but for a failure in that moment, which fails its request like any other, and
    SQLAlchemy then discards the whole pool."""

    @event.listens_for(engine, "checkin")
    def _stamp(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info[LAST_USED] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        last_used = record.info.get(LAST_USED)
        if last_used is None or time.monotonic() - last_used < PING_AFTER_IDLE_S:
            return  # fresh from connect, or just used
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            raise DisconnectionError() from error  # the pool connects afresh, up to 3 times


def _bound_statements_by_deadline(engine: Engine, statement_ms: int) -> None:
    """Before each statement of a connection given a deadline (DEADLINE_OPTION), shortens
    statement_timeout to the time then left, never lengthens it past `statement_ms`.
    statement_timeout counts from each statement's own start, so it is set again every time:
    set once, a statement that starts later (a busy machine) would wait past the deadline,
    and might still commit. SET LOCAL lasts the transaction, which a group commit shares
    among requests: the next statement without so near a deadline (another request's) sets
    `statement_ms` back."""

    @event.listens_for(engine, "begin")
    def _not_shortened(connection: Any) -> None:
        connection.info.pop(_SHORTENED, None)

    @event.listens_for(engine, "before_cursor_execute")
    def _bound(connection: Any, cursor: Any, *_: Any) -> None:
        deadline = connection.get_execution_options().get(DEADLINE_OPTION)
        bound_ms = statement_ms
        if deadline is not None:
            # Rounded up: cancelled no sooner than the deadline, when the caller has gone.
            remaining_ms = math.ceil((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                raise DeadlineExceeded("the caller's deadline passed during the transaction")
            bound_ms = min(remaining_ms, statement_ms)
        if bound_ms < statement_ms or connection.info.get(_SHORTENED):
            if cursor.connection.info.transaction_status.name == "INERROR":
                return  # only a ROLLBACK (TO SAVEPOINT) can run, and SET would fail
            cursor.execute(f"SET LOCAL statement_timeout = {bound_ms}")
            connection.info[_SHORTENED] = bound_ms < statement_ms


_SHORTENED = "mplus_statement_timeout_shortened"
"""In a connection's info: this transaction's statement_timeout may be below `statement_ms`."""


def statement_timeout_unknown(connection: Connection) -> None:
    """After ROLLBACK TO SAVEPOINT, which restores the statement_timeout the savepoint began
    with: the next statement sets its own again."""
    connection.info[_SHORTENED] = True


def _sqlite_engine(url: str, pool_size: int, timeouts: DatabaseTimeouts) -> Engine:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise ConfigError("SQLite needs a file: an in-memory database is not durable")
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        pool_timeout=timeouts.pool_ms / 1000,
        # The most recently used connection first: writers take turns (group commit), so one
        # or two connections do the work and keep their page caches warm, instead of every
        # connection of the pool filling a cache of its own (RSS growing with the database).
        pool_use_lifo=True,
        hide_parameters=True,
        connect_args={"timeout": timeouts.lock_ms / 1000},
    )

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Take over transaction control from pysqlite so that BEGIN IMMEDIATE below works.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={timeouts.lock_ms}")
        cursor.close()

    @event.listens_for(engine, "connect")
    def _open_writer_lock(_dbapi_connection: Any, record: Any) -> None:
        try:
            record.info[WRITER_LOCK] = WriterLock(Path(database))
        except OSError as error:  # as the driver's own: SQLAlchemy wraps it, callers translate it
            raise sqlite3.OperationalError(f"cannot open the writer lock: {error}") from error

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        # Take the write lock up front: a read-then-write transaction can then never fail
        # with "database is locked" halfway, and concurrent requests serialise cleanly. Waiting
        # for it is bounded by the busy timeout: past that, "database is locked". Writers in
        # other processes queue on the writer lock first (see writer_lock).
        try:
            connection.connection.info[WRITER_LOCK].acquire(timeouts.lock_ms / 1000)
        except WriterLockTimeout as timeout:
            raise OperationalError("BEGIN IMMEDIATE", None, timeout) from None
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    @event.listens_for(engine, "checkin")
    def _release_writer_lock(_dbapi_connection: Any, record: Any) -> None:
        # After the pool's rollback-on-return: the transaction is over either way.
        lock = record.info.get(WRITER_LOCK) if record is not None else None
        if lock is not None:
            lock.release()

    @event.listens_for(engine, "close")
    def _close_writer_lock(_dbapi_connection: Any, record: Any) -> None:
        lock = record.info.pop(WRITER_LOCK, None) if record is not None else None
        if lock is not None:
            lock.close()

    return engine


def database_answers(engine: Engine) -> bool:
    """The database runs `SELECT 1` now: a health probe's question, any error a no. On a DBAPI
    connection of its own, outside a transaction: SQLAlchemy's would begin one, and on SQLite
    that is BEGIN IMMEDIATE, the one write lock, taken every second for nothing."""
    failures = (DBAPIError, PoolTimeout, engine.dialect.loaded_dbapi.Error)
    try:
        connection = engine.raw_connection()  # the driver's own errors: SQLAlchemy wraps none
    except failures:
        return False
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT 1")
        cursor.fetchall()
        cursor.close()
        connection.rollback()
    except failures:
        connection.invalidate()  # a broken connection goes; the next probe connects afresh
        return False
    finally:
        connection.close()
    return True
