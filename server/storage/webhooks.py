"""The delivery-receipt webhook outbox: rows written with a message's final state, posted later."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select, update

from server.storage.dispatch import Backlog, count_up_to, first_due
from server.storage.tables import accounts, queued_messages, webhook_deliveries

PENDING, DELIVERED, GIVEN_UP = "pending", "delivered", "given_up"


@dataclass(frozen=True)
class DueReceipt:
    """A claimed receipt: what to post where, signed with the account's secret as it is now."""

    message_uuid: str
    batch_uuid: str
    url: str
    body: str
    attempts: int
    created_at: datetime
    secret: str


class WebhookOutbox:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def add(self, message_uuid: str, account_id: str, url: str, body: str, now: datetime) -> None:
        """Queues one receipt, due at once. The message uuid is the key: a message's receipt
        can be queued once only (a second try is an IntegrityError, a bug)."""
        self._connection.execute(
            insert(webhook_deliveries).values(
                message_uuid=message_uuid,
                account_id=account_id,
                url=url,
                body=body,
                status="pending",
                attempts=0,
                due_at=now,
                created_at=now,
            )
        )

    def claim(
        self, owner: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[DueReceipt]:
        """Leases up to `limit` pending receipts due by `now` (a lease that ran out leaves its
        row due) to `owner` until `lease_until`, oldest due first. PostgreSQL skips rows another
        sender is claiming (FOR UPDATE SKIP LOCKED); SQLite's transactions hold its one write
        lock from BEGIN (BEGIN IMMEDIATE, see storage.database), so claims there take turns."""
        table = webhook_deliveries
        due = (
            select(table.c.message_uuid)
            .where(table.c.status == PENDING, table.c.due_at <= now)
            .order_by(table.c.due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        claimed = list(self._connection.execute(due).scalars())
        if not claimed:
            return []
        self._connection.execute(
            update(table)
            .where(table.c.message_uuid.in_(claimed))
            .values(lease_owner=owner, due_at=lease_until)
        )
        rows = self._connection.execute(
            select(
                table.c.message_uuid,
                queued_messages.c.batch_uuid,
                table.c.url,
                table.c.body,
                table.c.attempts,
                table.c.created_at,
                accounts.c.webhook_secret.label("secret"),
            )
            .join(accounts, accounts.c.id == table.c.account_id)
            .join(queued_messages, queued_messages.c.message_uuid == table.c.message_uuid)
            .where(table.c.message_uuid.in_(claimed))
            .order_by(table.c.created_at, table.c.message_uuid)
        )
        return [DueReceipt(**row._mapping) for row in rows]

    def backlog(self, now: datetime, cap: int) -> Backlog:
        """Receipts pending (to post, or waiting to be posted again), up to `cap`, and the
        longest due of them; index range reads on (status, due_at)."""
        table = webhook_deliveries
        pending = table.c.status == PENDING
        oldest = first_due(table.c.due_at, pending, table.c.due_at <= now)
        row = self._connection.execute(select(count_up_to(cap, pending), oldest)).one()
        return Backlog(row[0], row[1])

    def delivered(self, message_uuid: str, owner: str, now: datetime) -> bool:
        """Records a 2xx answer; False when `owner`'s lease was lost (the result is dropped)."""
        return self._finish_leased(
            message_uuid,
            owner,
            status=DELIVERED,
            attempts=webhook_deliveries.c.attempts + 1,
            finished_at=now,
            last_error=None,
        )

    def retry_at(self, message_uuid: str, owner: str, error: str, due_at: datetime) -> bool:
        """Records a failed post, to be tried again at `due_at`; False as above."""
        return self._finish_leased(
            message_uuid,
            owner,
            attempts=webhook_deliveries.c.attempts + 1,
            last_error=error,
            due_at=due_at,
        )

    def given_up(
        self, message_uuid: str, owner: str, error: str, now: datetime, *, posted: bool
    ) -> bool:
        """Records the end of a receipt that will not be delivered; `posted` when this try
        reached the network (a refused destination never does). False as above."""
        attempts = webhook_deliveries.c.attempts + (1 if posted else 0)
        return self._finish_leased(
            message_uuid,
            owner,
            status=GIVEN_UP,
            attempts=attempts,
            last_error=error,
            finished_at=now,
        )

    def _finish_leased(self, message_uuid: str, owner: str, **values: Any) -> bool:
        """Ends `owner`'s lease with `values`, only while `owner` still holds it."""
        table = webhook_deliveries
        result = self._connection.execute(
            update(table)
            .where(
                table.c.message_uuid == message_uuid,
                table.c.lease_owner == owner,
                table.c.status == PENDING,
            )
            .values(lease_owner=None, **values)
        )
        return result.rowcount == 1
