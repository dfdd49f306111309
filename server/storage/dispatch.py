"""The dispatcher's reads and writes on the queue: claims under a lease, attempts, outcomes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, case, func, insert, literal, select, update

from server.domain.delivery import AttemptOutcome, MessageStatus, ReceiptCode
from server.storage.tables import delivery_attempts, queued_messages

CLAIMABLE = (MessageStatus.QUEUED, MessageStatus.SENDING, MessageStatus.SENT)
"""With `due_at` passed: queued ones are due, sending ones lost their dispatcher (the lease
ran out), sent ones are with the carrier and expire unless their receipts came."""


@dataclass(frozen=True)
class ClaimedMessage:
    """A message one dispatcher holds until `due_at`, under the lease `lease_owner`."""

    message_uuid: str
    batch_uuid: str
    account_id: str
    destination: str
    sender: str
    body: str
    callback: str | None
    channels: tuple[str, ...]
    channel_index: int
    """The position in `channels` to try."""
    channel: str | None
    """The channel last tried (None before the first try)."""
    attempts: int
    """Tries made on that channel so far."""
    status: MessageStatus
    """SENDING: to be sent; SENT: with the carrier, and now past its receipt timeout."""
    lease_owner: str | None
    """The lease it is held under; None for a message with the carrier that a receipt is
    settling (no lease: the status alone guards it)."""
    due_at: datetime
    """When the lease runs out."""


@dataclass(frozen=True)
class Backlog:
    """Work waiting in a table: how much, counted up to a cap, and the longest waiting's
    `due_at` (None when nothing is due)."""

    count: int
    oldest_due_at: datetime | None


def count_up_to(cap: int, *where: ColumnElement[bool]) -> Any:
    """`count(*)` of the rows `where` selects, reading `cap` of them at the most: a scalar
    subquery whose cost an index bounds however large the table grows."""
    rows = select(literal(1)).where(*where).limit(cap).subquery()
    return select(func.count()).select_from(rows).scalar_subquery()


def first_due(due_at: ColumnElement[datetime], *where: ColumnElement[bool]) -> Any:
    """The least `due_at` of the rows `where` selects, as a scalar subquery: ORDER BY … LIMIT 1,
    one step down an index on (…, due_at) where min() might read the whole range."""
    return select(due_at).where(*where).order_by(due_at).limit(1).scalar_subquery()


class DispatchRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def claim_due(
        self, now: datetime, lease_until: datetime, lease_owner: str, limit: int
    ) -> list[ClaimedMessage]:
        """Leases up to `limit` due messages, the longest due first, to `lease_owner` until
        `lease_until`; a message to send becomes SENDING, a sent one stays SENT.

        One statement, `UPDATE … WHERE message_uuid IN (SELECT … LIMIT n) RETURNING`, and
        never two claims of one message:
        - PostgreSQL: the subquery is `FOR UPDATE SKIP LOCKED`. It locks the rows it picks and
          passes over rows another claim holds; a row claimed and committed meanwhile is
          checked again under the lock, and is no longer due. Concurrent dispatchers each
          take different rows, and none waits for another.
        - SQLite (no row locks, and FOR UPDATE renders as nothing): one writer at a time.
          The engine begins each transaction with BEGIN IMMEDIATE, so the write lock is held
          before the subquery reads; and a deferred transaction whose snapshot another writer
          made stale would fail with SQLITE_BUSY, not claim from it. The second dispatcher
          waits (busy timeout) and then reads the first one's claims as not due.
        """
        due = (
            select(queued_messages.c.message_uuid)
            .where(queued_messages.c.status.in_(CLAIMABLE), queued_messages.c.due_at <= now)
            .order_by(queued_messages.c.due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = self._connection.execute(
            update(queued_messages)
            .where(queued_messages.c.message_uuid.in_(due.scalar_subquery()))
            .values(
                status=case(
                    (queued_messages.c.status == MessageStatus.SENT, MessageStatus.SENT.value),
                    else_=MessageStatus.SENDING.value,
                ),
                due_at=lease_until,
                lease_owner=lease_owner,
            )
            .returning(*queued_messages.c)
        ).all()
        return [_claimed(row) for row in rows]  # RETURNING keeps no order: none is promised

    def backlog(self, now: datetime, cap: int) -> Backlog:
        """Messages due by `now` that no dispatcher holds (CLAIMABLE: a lease that ran out
        counts), up to `cap`, and the longest due. One statement of index range reads on
        (status, due_at), one status at a time."""
        table = queued_messages
        due = [(table.c.status == status, table.c.due_at <= now) for status in CLAIMABLE]
        counts = [count_up_to(cap, *where) for where in due]
        oldest = [first_due(table.c.due_at, *where) for where in due]
        row = self._connection.execute(select(*counts, *oldest)).one()
        found = [at for at in row[len(counts) :] if at is not None]
        return Backlog(min(cap, sum(row[: len(counts)])), min(found, default=None))

    def requeue(
        self,
        claim: ClaimedMessage,
        channel: str,
        channel_index: int,
        attempts: int,
        due_at: datetime,
    ) -> bool:
        """Back in the queue, due at `due_at`: a retry, or the next channel. False (and
        nothing written) when the lease was lost to another dispatcher."""
        queued = MessageStatus.QUEUED
        return self._update_held(
            claim, queued, channel, attempts, channel_index=channel_index, due_at=due_at
        )

    def mark_sent(
        self, claim: ClaimedMessage, channel: str, attempts: int, expires_at: datetime
    ) -> bool:
        """With the carrier since `channel` accepted it; it expires at `expires_at` unless
        its receipts come first. False when the lease was lost."""
        sent = MessageStatus.SENT
        return self._update_held(claim, sent, channel, attempts, due_at=expires_at)

    def sent_message(self, message_uuid: str) -> ClaimedMessage | None:
        """The message if it is with the carrier, locked until the transaction ends (on
        PostgreSQL; SQLite's one writer holds the lock already), so that two receipts of one
        message settle it one after the other. None once it is final."""
        row = self._connection.execute(
            select(queued_messages)
            .where(
                queued_messages.c.message_uuid == message_uuid,
                queued_messages.c.status == MessageStatus.SENT,
            )
            .with_for_update()
        ).one_or_none()
        return None if row is None else replace(_claimed(row), lease_owner=None)

    def finish(
        self,
        claim: ClaimedMessage,
        receipt: ReceiptCode,
        now: datetime,
        channel: str | None,
        attempts: int,
    ) -> bool:
        """Delivered or failed, as `receipt` says, for good; `channel` the one last tried.
        False when the lease was lost (or, for a claim without a lease, the message is no
        longer with the carrier)."""
        final = MessageStatus.DELIVERED if receipt.delivered else MessageStatus.FAILED
        return self._update_held(claim, final, channel, attempts, receipt, finished_at=now)

    def release(self, claims: Sequence[ClaimedMessage], now: datetime) -> int:
        """Ends the leases of claims not worked on, each as it was before the claim (a sent
        message stays sent) and due at `now`; a lease already lost is left alone. Answers how
        many were handed back."""
        released = 0
        for claim in claims:
            before = (
                MessageStatus.SENT if claim.status is MessageStatus.SENT else MessageStatus.QUEUED
            )
            released += self._end_lease(claim, status=before, due_at=now)
        return released

    def record_attempt(
        self,
        message_uuid: str,
        channel: str,
        attempt: int,
        outcome: AttemptOutcome,
        code: str | None,
        description: str | None,
        now: datetime,
    ) -> None:
        self._connection.execute(
            insert(delivery_attempts).values(
                message_uuid=message_uuid,
                channel=channel,
                attempt=attempt,
                outcome=outcome.value,
                code=code,
                description=description,
                at=now,
            )
        )

    def _update_held(
        self,
        claim: ClaimedMessage,
        status: MessageStatus,
        channel: str | None,
        attempts: int,
        receipt: ReceiptCode | None = None,
        **values: Any,
    ) -> bool:
        """Moves the message on and ends the lease, only while `claim`'s lease still holds."""
        if receipt is not None:
            values.update(receipt_code=receipt.code, receipt_description=receipt.description)
        return (
            self._end_lease(claim, status=status, channel=channel, attempts=attempts, **values) == 1
        )

    def _end_lease(self, claim: ClaimedMessage, **values: Any) -> int:
        """Writes `values` and ends the lease, only while `claim`'s lease still holds: 1, or
        0 when another dispatcher claimed the message meanwhile. A claim without a lease (a
        message a receipt settles) needs only its status unchanged."""
        held = [
            queued_messages.c.message_uuid == claim.message_uuid,
            queued_messages.c.status == claim.status,
        ]
        if claim.lease_owner is not None:
            held.append(queued_messages.c.lease_owner == claim.lease_owner)
        result = self._connection.execute(
            update(queued_messages).where(*held).values(lease_owner=None, **values)
        )
        return result.rowcount


def _claimed(row: Any) -> ClaimedMessage:
    converted: dict[str, Any] = {
        "channels": tuple(row.channels),
        "status": MessageStatus(row.status),
    }
    as_stored = {
        f.name: getattr(row, f.name) for f in fields(ClaimedMessage) if f.name not in converted
    }
    return ClaimedMessage(**as_stored, **converted)
