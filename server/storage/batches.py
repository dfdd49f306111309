"""Batches as an account sees them: receipts per batch, pending scheduled batches, cancelling."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from sqlalchemy import Connection, and_, func, select, true, update

from server.domain.batches import BatchMessage, PendingMessage
from server.domain.delivery import MessageStatus, ReceiptCode, receipt_code
from server.storage.tables import queued_messages

_QUEUED = MessageStatus.QUEUED.value
_CANCELLED = MessageStatus.CANCELLED.value
_NEVER_RELEASED = and_(
    queued_messages.c.status == _QUEUED,
    queued_messages.c.attempts == 0,
    queued_messages.c.channel_index == 0,
)
"""Queued and never tried: a message queued again for a retry's backoff was released once."""


class BatchRepository:
    """Every query is scoped to one account: another account's batch is simply not there."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def messages(self, account_id: str, batch_uuid: str) -> list[BatchMessage]:
        """The batch's messages, cancelled ones left out, in a stable order (by destination:
        the queue keeps no request order within a batch)."""
        q = queued_messages.c
        rows = self._connection.execute(
            select(q.destination, q.message_uuid, q.status, q.receipt_code, q.receipt_description)
            .where(q.account_id == account_id, q.batch_uuid == batch_uuid, q.status != _CANCELLED)
            .order_by(q.destination, q.message_uuid)
        )
        return [
            BatchMessage(
                destination=row.destination,
                batch_uuid=batch_uuid,
                message_uuid=row.message_uuid,
                status=MessageStatus(row.status),
                receipt=_receipt(row.status, row.receipt_code, row.receipt_description),
            )
            for row in rows
        ]

    def pending_messages(self, account_id: str) -> list[PendingMessage]:
        """The account's scheduled messages not yet released to a dispatcher."""
        q = queued_messages.c
        rows = self._connection.execute(
            select(q.batch_uuid, q.due_at, q.sender, q.body).where(
                q.account_id == account_id, _NEVER_RELEASED, q.scheduled == true()
            )
        )
        return [PendingMessage(r.batch_uuid, r.due_at, r.sender, r.body) for r in rows]

    def cancel_queued(self, account_id: str, batch_uuid: str, now: datetime) -> int:
        """Cancels the batch's messages never released, in one UPDATE guarded by their state:
        a dispatcher claiming one at the same time either claims it first (the row no longer
        matches) or finds it cancelled. Returns how many were cancelled."""
        q = queued_messages.c
        result = self._connection.execute(
            update(queued_messages)
            .where(q.account_id == account_id, q.batch_uuid == batch_uuid, _NEVER_RELEASED)
            .values(status=_CANCELLED, finished_at=now)
        )
        return result.rowcount

    def statuses(self, account_id: str, batch_uuid: str) -> Counter[MessageStatus]:
        """How many of the batch's messages are in each state (this transaction's writes
        included)."""
        q = queued_messages.c
        rows = self._connection.execute(
            select(q.status, func.count())
            .where(q.account_id == account_id, q.batch_uuid == batch_uuid)
            .group_by(q.status)
        )
        return Counter({MessageStatus(status): count for status, count in rows})


def _receipt(status: str, code: str | None, description: str | None) -> ReceiptCode | None:
    """The stored receipt; a code stored without its text reads as the service describes it."""
    if code is None:
        return None
    if description is None:
        description = receipt_code(code).description
    return ReceiptCode(code, description, status == MessageStatus.DELIVERED.value)
