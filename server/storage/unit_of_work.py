"""One transaction per use case: commit is explicit, leaving the block rolls back the rest."""

from __future__ import annotations

from types import TracebackType

from sqlalchemy import Connection, Engine, RootTransaction
from sqlalchemy.exc import DBAPIError

from server.storage.repositories import (
    AccountRepository,
    ConflictingWrite,
    KeyRepository,
    MessageRepository,
    SenderRepository,
)

TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})


class UnitOfWork:
    accounts: AccountRepository
    keys: KeyRepository
    senders: SenderRepository
    messages: MessageRepository

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Connection | None = None
        self._transaction: RootTransaction | None = None

    def __enter__(self) -> UnitOfWork:
        self._connection = self._engine.connect()
        self._transaction = self._connection.begin()
        self.accounts = AccountRepository(self._connection)
        self.keys = KeyRepository(self._connection)
        self.senders = SenderRepository(self._connection)
        self.messages = MessageRepository(self._connection)
        return self

    def commit(self) -> None:
        assert self._transaction is not None, "commit outside of `with`"
        self._transaction.commit()

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
        finally:
            self._connection.close()
            self._connection = self._transaction = None
        if isinstance(exc, DBAPIError) and _is_transient_conflict(exc):
            raise ConflictingWrite("the database aborted a conflicting transaction") from exc


def _is_transient_conflict(error: DBAPIError) -> bool:
    """PostgreSQL's serialization failure or deadlock: the transaction is safe to run again."""
    return getattr(error.orig, "sqlstate", None) in TRANSIENT_SQLSTATES
