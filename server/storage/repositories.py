"""Repositories: each table's reads and writes, in the terms the service layer speaks."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, NamedTuple

from sqlalchemy import (
    Connection,
    Dialect,
    Insert,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, IntegrityError

from server.domain.model import AcceptedMessage, OutgoingMessage, SenderType
from server.storage.errors import ConflictingWrite
from server.storage.lists import DIALECTS, any_of, bound_list
from server.storage.tables import accounts, api_keys, queued_messages, sender_pins, shared_senders
from server.storage.writes import wrote


def _upsertable_insert(connection: Connection, table: Any) -> Any:
    """INSERT with ON CONFLICT support, in the dialect of the connection."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


@dataclass(frozen=True)
class AccountSummary:
    id: str
    name: str
    created_at: datetime
    active_keys: int


class AccountRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def add(self, name: str, webhook_secret: str, now: datetime) -> str:
        account_id = str(uuid.uuid4())
        try:
            self._connection.execute(
                insert(accounts).values(
                    id=account_id, name=name, webhook_secret=webhook_secret, created_at=now
                )
            )
        except IntegrityError as error:
            raise ConflictingWrite(f"an account named {name!r} exists") from error
        return account_id

    def id_for(self, id_or_name: str) -> str | None:
        row = self._connection.execute(
            select(accounts.c.id).where(
                (accounts.c.id == id_or_name) | (accounts.c.name == id_or_name)
            )
        ).first()
        return row.id if row else None

    def webhook_secret(self, account_id: str) -> str | None:
        return self._connection.execute(
            select(accounts.c.webhook_secret).where(accounts.c.id == account_id)
        ).scalar_one_or_none()

    def set_webhook_secret(self, account_id: str, webhook_secret: str) -> None:
        self._connection.execute(
            update(accounts)
            .where(accounts.c.id == account_id)
            .values(webhook_secret=webhook_secret)
        )

    def summaries(self) -> list[AccountSummary]:
        active = (
            select(api_keys.c.account_id, func.count().label("active_keys"))
            .where(api_keys.c.revoked_at.is_(None))
            .group_by(api_keys.c.account_id)
            .subquery()
        )
        rows = self._connection.execute(
            select(accounts, func.coalesce(active.c.active_keys, 0).label("active_keys"))
            .outerjoin(active, active.c.account_id == accounts.c.id)
            .order_by(accounts.c.created_at, accounts.c.name)
        )
        return [AccountSummary(r.id, r.name, r.created_at, r.active_keys) for r in rows]


_ACCOUNT_FOR = select(api_keys.c.account_id).where(
    api_keys.c.key_hash == bindparam("key_hash"), api_keys.c.revoked_at.is_(None)
)
"""Built once, as every statement a request runs: building one costs several times what
running it from SQLAlchemy's compiled cache does."""


class KeyRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._accounts: dict[str, str | None] = {}
        """Answers already read in this transaction (a unit of work's, which a group commit
        shares among requests). On SQLite only its own writes could change them; on
        PostgreSQL a revocation committed meanwhile counts from the next transaction on."""

    def add(self, account_id: str, key_hash: str, now: datetime) -> None:
        self._accounts.clear()
        self._connection.execute(
            insert(api_keys).values(
                id=str(uuid.uuid4()), account_id=account_id, key_hash=key_hash, created_at=now
            )
        )

    def account_for(self, key_hash: str) -> str | None:
        """The account an active key belongs to; None for unknown and revoked keys alike."""
        if key_hash not in self._accounts:
            self._accounts[key_hash] = self._connection.execute(
                _ACCOUNT_FOR, {"key_hash": key_hash}
            ).scalar()
        return self._accounts[key_hash]

    def revoke(self, key_hash: str, now: datetime) -> bool:
        self._accounts.clear()
        result = self._connection.execute(
            update(api_keys)
            .where(api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return result.rowcount > 0


_POOL = select(shared_senders.c.sender).order_by(shared_senders.c.sender)
_PINS = select(sender_pins.c.destination, sender_pins.c.sender).join(
    shared_senders, shared_senders.c.sender == sender_pins.c.sender
)
_PINNED_ONE = _PINS.where(
    sender_pins.c.account_id == bindparam("account_id"),
    sender_pins.c.destination == bindparam("destination"),
)
"""One destination (a single message's): no list to bind."""
_PINNED = {
    dialect: _PINS.where(
        sender_pins.c.account_id == bindparam("account_id"),
        any_of(sender_pins.c.destination, "destinations", dialect),
    )
    for dialect in DIALECTS
}


def _pin_statement(insert_into: Callable[[Any], Any]) -> Insert:
    """A pin per row; a pin whose sender left the pool is replaced, a live one kept."""
    statement = insert_into(sender_pins)
    return statement.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=[sender_pins.c.account_id, sender_pins.c.destination],
        set_={"sender": statement.excluded.sender, "pinned_at": statement.excluded.pinned_at},
        where=sender_pins.c.sender.not_in(select(shared_senders.c.sender)),
    )


_PIN = {"postgresql": _pin_statement(postgresql.insert), "sqlite": _pin_statement(sqlite.insert)}
"""By dialect name: ON CONFLICT is each dialect's own construct."""


class SenderRepository:
    """The shared sender pool and the sticky pins of accounts to pool senders."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def add(self, senders: Collection[str], now: datetime) -> int:
        if not senders:
            return 0
        statement = (
            _upsertable_insert(self._connection, shared_senders)
            .values([{"sender": s, "added_at": now} for s in senders])
            .on_conflict_do_nothing()
            .returning(shared_senders.c.sender)
        )
        return len(self._connection.execute(statement).all())  # rowcount is -1 on psycopg

    def remove(self, senders: Collection[str]) -> int:
        result = self._connection.execute(
            delete(shared_senders).where(shared_senders.c.sender.in_(list(senders)))
        )
        return result.rowcount

    def pool(self) -> list[str]:
        return list(self._connection.execute(_POOL).scalars())

    def pinned(self, account_id: str, destinations: Collection[str]) -> dict[str, str]:
        """Destination → pinned sender, for pins whose sender is still in the pool."""
        if len(destinations) == 1:
            (destination,) = destinations
            rows = self._connection.execute(
                _PINNED_ONE, {"account_id": account_id, "destination": destination}
            )
        else:
            rows = self._connection.execute(
                _PINNED[self._connection.dialect.name],
                {
                    "account_id": account_id,
                    "destinations": bound_list(self._connection, destinations),
                },
            )
        return {destination: sender for destination, sender in rows}

    def pin(self, account_id: str, choices: Mapping[str, str], now: datetime) -> None:
        """Pins each destination to its chosen sender unless a live pin already exists.

        A pin whose sender left the pool is replaced; a live pin, including one a
        concurrent transaction just committed, is kept. Read `pinned` afterwards for the
        winners.
        """
        if not choices:
            return
        self._connection.execute(
            _PIN[self._connection.dialect.name],
            [
                {"account_id": account_id, "destination": d, "sender": s, "pinned_at": now}
                for d, s in sorted(choices.items())
            ],
        )


@dataclass(frozen=True)
class StoredMessage:
    """A queued message found by its client id: its content's fingerprint and first answer."""

    fingerprint: str
    accepted: AcceptedMessage


class NewMessage(NamedTuple):
    message: OutgoingMessage
    accepted: AcceptedMessage


_BY_CLIENT_IDS = {
    dialect: select(queued_messages).where(
        queued_messages.c.account_id == bindparam("account_id"),
        any_of(queued_messages.c.client_id, "client_ids", dialect),
    )
    for dialect in DIALECTS
}
"""Built once: building a statement costs more than running it from the compiled cache."""


class MessageRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def by_client_ids(
        self, account_id: str, client_ids: Collection[str]
    ) -> dict[str, StoredMessage]:
        if not client_ids:
            return {}
        rows = self._connection.execute(
            _BY_CLIENT_IDS[self._connection.dialect.name],
            {"account_id": account_id, "client_ids": bound_list(self._connection, client_ids)},
        )
        return {
            row.client_id: StoredMessage(
                row.fingerprint,
                AcceptedMessage(
                    to=row.destination,
                    body=row.body,
                    sender_type=SenderType(row.sender_type),
                    sender=row.sender,
                    callback=row.callback,
                    channels=tuple(row.channels) if row.channels_given else None,
                    id=row.submitted_id,
                    send_at=row.send_at,
                    message_uuid=row.message_uuid,
                    batch_uuid=row.batch_uuid,
                    scheduled=row.scheduled,
                ),
            )
            for row in rows
        }

    def add_many(self, account_id: str, messages: Sequence[NewMessage], now: datetime) -> None:
        """Queues the messages in bulk; a client id stored meanwhile → ConflictingWrite.

        The rows go to the driver as SQLAlchemy's own column types would bind them, but each
        distinct value (the timestamps, the channel lists, the flags) is converted once per
        request instead of once per row: the rows are the service's hottest loop. Only a
        message with an id gets a fingerprint: only an id finds a stored message again."""
        if not messages:
            return
        dialect = self._connection.dialect
        insert_rows = _BulkInsert.for_dialect(dialect)
        channels: dict[tuple[str, ...], Any] = {}
        stamps: dict[datetime, Any] = {}
        flag = insert_rows.flag
        created_at = insert_rows.stamp(now)
        if any(m.message.id is not None for m in messages):
            # One lock order for every transaction: two requests storing the same ids wait for
            # each other instead of deadlocking.
            messages = sorted(messages, key=lambda m: m.message.client_id or "")
        rows = []
        for message, accepted in messages:
            given = message.channels
            if given not in channels:
                channels[given] = insert_rows.channels(list(given))
            due_at = message.due_at
            if due_at not in stamps:
                stamps[due_at] = insert_rows.stamp(due_at)
            rows.append(
                (
                    accepted.message_uuid, accepted.batch_uuid, account_id, message.client_id,
                    message.id, message.fingerprint() if message.id is not None else "",
                    message.to, message.sender_type.value,
                    accepted.sender, message.body, message.callback, channels[given],
                    flag[message.channels_given], message.send_at, stamps[due_at],
                    flag[accepted.scheduled], "queued", created_at,
                )
            )  # fmt: skip
        try:
            insert_rows.execute(self._connection, rows)
        except IntegrityError as error:
            raise ConflictingWrite("a message id was stored concurrently") from error


_BULK_COLUMNS = (
    "message_uuid", "batch_uuid", "account_id", "client_id", "submitted_id", "fingerprint",
    "destination", "sender_type", "sender", "body", "callback", "channels", "channels_given",
    "send_at", "due_at", "scheduled", "status", "created_at",
)  # fmt: skip


def _identity(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class _BulkInsert:
    """queued_messages rows as positional tuples straight to the driver: sqlite3's
    `executemany`; on PostgreSQL psycopg's pipelined `executemany` for a few rows and `COPY`
    for many (a fraction of the server's work per row)."""

    statement: str
    copy: str | None
    """PostgreSQL's COPY statement; None elsewhere."""
    stamp: Callable[[datetime], Any]
    channels: Callable[[list[str]], Any]
    flag: Mapping[bool, Any]

    _by_dialect: ClassVar[dict[tuple[str, str], _BulkInsert]] = {}

    @classmethod
    def for_dialect(cls, dialect: Dialect) -> _BulkInsert:
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
