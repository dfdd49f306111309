"""One transaction per use case: commit is explicit, leaving the block rolls back the rest."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType

from sqlalchemy import Connection, Engine, RootTransaction
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from server.storage.accounts import AccountRepository
from server.storage.batches import BatchRepository
from server.storage.carrier import CarrierRepository
from server.storage.database import DEADLINE_OPTION, statement_timeout_unknown
from server.storage.dispatch import DispatchRepository
from server.storage.errors import ConflictingWrite, DeadlineExceeded, StorageUnavailable
from server.storage.keys import KeyRepository
from server.storage.messages import MessageRepository
from server.storage.senders import SenderRepository
from server.storage.webhooks import WebhookOutbox
from server.storage.writer_lock import WriterLockTimeout
from server.storage.writes import writes

TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})
"""PostgreSQL's serialization failure and deadlock: the transaction is safe to run again."""
LOCK_NOT_AVAILABLE = "55P03"
"""PostgreSQL's lock_timeout expired."""
QUERY_CANCELED = "57014"
"""PostgreSQL's statement_timeout expired."""
SQLITE_BUSY = "SQLITE_BUSY"
"""SQLite's busy timeout expired waiting for the write lock ("database is locked")."""


_SAVEPOINT = "SAVEPOINT request"
_ROLLBACK_TO = "ROLLBACK TO SAVEPOINT request"
_RELEASE = "RELEASE SAVEPOINT request"
"""One request's savepoint under group commit, one at a time per connection. As plain SQL
through the connection (its error translation applies): SQLAlchemy's begin_nested() compiles
its SAVEPOINT clause anew each time, three times the cost, in the group's serial part."""


class UnitOfWork:
    accounts: AccountRepository
    keys: KeyRepository
    senders: SenderRepository
    messages: MessageRepository
    dispatch: DispatchRepository
    carrier: CarrierRepository
    webhooks: WebhookOutbox
    batches: BatchRepository

    def __init__(
        self, engine: Engine, on_finish: Callable[[float], None] = lambda _seconds: None
    ) -> None:
        """`on_finish` hears each transaction's seconds, from taking a connection to commit
        or rollback: lock waits and the commit's fsync included (a metric, say)."""
        self._engine = engine
        self._on_finish = on_finish
        self._started = 0.0
        self._connection: Connection | None = None
        self._transaction: RootTransaction | None = None
        self._deadline: float | None = None
        self._in_savepoint = False
        self._in_part = False
        self.released = False
        """Inside `savepoint()` or `part()`: `commit()` kept this request's writes in the
        shared transaction (released the savepoint)."""

    def __enter__(self) -> UnitOfWork:
        self._started = time.perf_counter()
        try:
            self._connection = self._engine.connect()
            self._transaction = self._connection.begin()
        except (DBAPIError, PoolTimeout) as error:
            if self._connection is not None:
                self._connection.close()
                self._connection = None
            raise _translated(error) from error
        self.accounts = AccountRepository(self._connection)
        self.keys = KeyRepository(self._connection)
        self.senders = SenderRepository(self._connection)
        self.messages = MessageRepository(self._connection)
        self.dispatch = DispatchRepository(self._connection)
        self.carrier = CarrierRepository(self._connection)
        self.webhooks = WebhookOutbox(self._connection)
        self.batches = BatchRepository(self._connection)
        return self

    def finish_by(self, deadline: float | None) -> None:
        """No statement of this transaction outlives `deadline`, a time.monotonic() value (the
        caller's gRPC deadline): past it the caller has gone, and waiting on only holds a
        connection and locks. PostgreSQL only; SQLite's one bound is its busy timeout. The
        service checks the deadline again before it commits."""
        assert self._connection is not None, "finish_by outside of `with`"
        if deadline is None:
            return
        self._deadline = deadline
        if deadline <= time.monotonic():
            raise DeadlineExceeded("the caller's deadline passed before the database was asked")
        # The engine's statement hook (database._bound_statements_by_deadline) reads it.
        self._connection.execution_options(**{DEADLINE_OPTION: deadline})

    def commit(self) -> None:
        """Commits the transaction; inside `savepoint()`, releases the savepoint instead."""
        assert self._transaction is not None, "commit outside of `with`"
        assert not self.released, "a request's part of a shared transaction committed twice"
        if self._in_savepoint:
            self._connection_in_use().exec_driver_sql(_RELEASE)
            self._in_savepoint, self.released = False, True
            return
        if self._in_part:
            self._in_part, self.released = False, True
            return
        # PostgreSQL answers COMMIT of an aborted transaction with a ROLLBACK, and psycopg
        # raises nothing: a group whose failed statement was not rolled back to its
        # savepoint would report its other requests stored.
        self._fail_if_aborted()
        self._transaction.commit()

    def _fail_if_aborted(self) -> None:
        if self._driver_transaction() != "open":
            raise StorageUnavailable("the transaction was aborted by a failed statement")

    def _driver_transaction(self) -> str:
        """ "open"; "failed", PostgreSQL's after a failed statement, until rolled back (to a
        savepoint); or "gone", rolled back by SQLite itself (a full disk, an I/O error, an
        interrupt), so that a SAVEPOINT would begin a transaction of its own."""
        driver_connection = self._connection_in_use().connection.driver_connection
        info = getattr(driver_connection, "info", None)
        if info is not None and hasattr(info, "transaction_status"):  # psycopg
            # IDLE is no gone transaction there: psycopg sends BEGIN with the first statement.
            return "failed" if info.transaction_status.name == "INERROR" else "open"
        return "open" if getattr(driver_connection, "in_transaction", True) else "gone"

    def writes(self) -> int:
        """Write statements run so far: compare two readings to learn whether work in
        between wrote (see `part`)."""
        return writes(self._connection_in_use())

    @contextmanager
    def part(self) -> Iterator[None]:
        """As `savepoint()`, without the savepoint: `commit()` marks the writes kept, and an
        error undoes nothing. For a group that runs its requests this way and, should one
        fail after it wrote (`writes`), rolls back and runs them in savepoints."""
        with self._request_part():
            self._in_part = True
            try:
                yield
            finally:
                self._in_part = False

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Inside the block this unit of work is one request's part of a shared transaction
        (group commit): `commit()` releases the savepoint, leaving the block without it (or by
        an error) rolls back to it and leaves the rest of the transaction as it was. Each
        savepoint starts with no deadline of its own (`finish_by` sets one)."""
        with self._request_part():
            self._fail_if_aborted()  # an earlier request's failure its rollback did not undo
            self._connection_in_use().exec_driver_sql(_SAVEPOINT)
            self._in_savepoint = True
            try:
                yield
            finally:
                self._roll_back_savepoint()

    @contextmanager
    def _request_part(self) -> Iterator[None]:
        """What `part()` and `savepoint()` share: no deadline of its own until `finish_by`,
        nothing committed (`released`) until `commit()`, and the driver's errors translated."""
        assert self._connection is not None, "a request's part outside of `with`"
        self._deadline, self.released = None, False
        self._connection.execution_options(**{DEADLINE_OPTION: None})
        try:
            yield
        except (DBAPIError, PoolTimeout) as error:
            translated = self._translated(error)
            if translated is error:
                raise
            raise translated from error
        finally:
            self.released = False

    def _roll_back_savepoint(self) -> None:
        if not self._in_savepoint:
            return
        self._in_savepoint = False
        connection = self._connection_in_use()
        transaction = self._transaction
        if (
            transaction is not None
            and transaction.is_active
            and not connection.invalidated
            and self._driver_transaction() != "gone"  # nothing left to roll back to
        ):
            # Not bound by the request's deadline: past it, the rollback must still happen.
            connection.execution_options(**{DEADLINE_OPTION: None})
            connection.exec_driver_sql(_ROLLBACK_TO)
            statement_timeout_unknown(connection)
            connection.exec_driver_sql(_RELEASE)
            self.keys = KeyRepository(connection)  # its answers may have read undone writes

    def _connection_in_use(self) -> Connection:
        assert self._connection is not None, "outside of `with`"
        return self._connection

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._connection is not None and self._transaction is not None
        try:
            if self._transaction.is_active:
                self._transaction.rollback()
        except DBAPIError:
            if exc is None:
                raise
            # The connection died with the request's own error; that error is what matters.
        finally:
            self._connection.close()
            self._connection = self._transaction = None
            self._on_finish(time.perf_counter() - self._started)
        if isinstance(exc, DBAPIError | PoolTimeout):
            translated = self._translated(exc)
            if translated is not exc:
                raise translated from exc

    def _translated(self, error: DBAPIError | PoolTimeout) -> Exception:
        translated = _translated(error)
        if isinstance(translated, StorageUnavailable) and self._past_deadline():
            return DeadlineExceeded(str(translated))
        return translated

    def _past_deadline(self) -> bool:
        """The caller's deadline has passed: whatever stopped the work, it has gone."""
        return self._deadline is not None and time.monotonic() >= self._deadline


def _translated(error: DBAPIError | PoolTimeout) -> Exception:
    """Races become ConflictingWrite, outages StorageUnavailable; anything else is a bug."""
    if isinstance(error, PoolTimeout):
        return StorageUnavailable("no database connection was free in time")
    sqlstate = getattr(error.orig, "sqlstate", None)
    if sqlstate in TRANSIENT_SQLSTATES:
        return ConflictingWrite("the database aborted a conflicting transaction")
    if (
        sqlstate == LOCK_NOT_AVAILABLE
        or getattr(error.orig, "sqlite_errorname", None) == SQLITE_BUSY
        or isinstance(error.orig, WriterLockTimeout)
    ):
        return StorageUnavailable("database busy: a lock was not granted in time")
    if sqlstate == QUERY_CANCELED:
        return StorageUnavailable("database busy: a statement did not finish in time")
    if error.connection_invalidated or isinstance(error, OperationalError | InterfaceError):
        return StorageUnavailable(f"database unavailable ({type(error.orig).__name__})")
    return error
