"""Queued messages: found again by the client's ids, stored in bulk."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, select
from sqlalchemy.exc import IntegrityError

from server.domain.model import AcceptedMessage, OutgoingMessage, SenderType
from server.storage.bulk_insert import BulkInsert
from server.storage.errors import ConflictingWrite
from server.storage.lists import DIALECTS, any_of, bound_list
from server.storage.tables import queued_messages


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
        insert_rows = BulkInsert.for_dialect(dialect)
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
