"""Batches as their account sees them: each message's receipt, the counts, pending batches."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from server.domain.delivery import MessageStatus, ReceiptCode, units


@dataclass(frozen=True)
class BatchMessage:
    """One message of a batch as stored: its state and, once final, its receipt."""

    destination: str
    """Digits only, as queued."""
    batch_uuid: str
    message_uuid: str
    status: MessageStatus
    receipt: ReceiptCode | None = None


@dataclass(frozen=True)
class Receipt:
    """One message's delivery state in the vendor's terms: delivered, failed, or neither
    (pending); `info` is the final receipt, None while pending."""

    destination: str
    """With a leading '+', as receipts give it."""
    delivered: bool
    failed: bool
    batch_uuid: str
    message_uuid: str
    info: ReceiptCode | None

    @classmethod
    def of(cls, message: BatchMessage) -> Receipt:
        delivered = message.status is MessageStatus.DELIVERED
        failed = message.status is MessageStatus.FAILED
        return cls(
            destination=f"+{message.destination}",
            delivered=delivered,
            failed=failed,
            batch_uuid=message.batch_uuid,
            message_uuid=message.message_uuid,
            info=message.receipt if delivered or failed else None,
        )


@dataclass(frozen=True)
class BatchReport:
    """A batch's counts, and its receipts when they were asked for (else empty)."""

    total: int
    delivered: int
    failed: int
    receipts: tuple[Receipt, ...] = ()

    @classmethod
    def of(cls, messages: Sequence[BatchMessage], details: bool) -> BatchReport:
        receipts = tuple(Receipt.of(m) for m in messages)
        return cls(
            total=len(receipts),
            delivered=sum(r.delivered for r in receipts),
            failed=sum(r.failed for r in receipts),
            receipts=receipts if details else (),
        )


@dataclass(frozen=True)
class PendingMessage:
    """One message of a scheduled batch not yet released."""

    batch_uuid: str
    due_at: datetime
    sender: str
    body: str


@dataclass(frozen=True)
class PendingBatch:
    """A scheduled batch waiting for its time: when, from whom, how many messages and units."""

    identifier: str
    at: datetime
    sender: str
    message_count: int
    unit_count: int


def pending_batches(messages: Iterable[PendingMessage]) -> list[PendingBatch]:
    """The messages grouped by batch, soonest first (then by identifier): a batch is due when
    its first message is, and its units are its messages' SMS parts together."""
    grouped: dict[str, list[PendingMessage]] = {}
    for message in messages:
        grouped.setdefault(message.batch_uuid, []).append(message)
    batches = [
        PendingBatch(
            identifier=batch_uuid,
            at=min(m.due_at for m in batch),
            sender=batch[0].sender,
            message_count=len(batch),
            unit_count=sum(units(m.body) for m in batch),
        )
        for batch_uuid, batch in grouped.items()
    ]
    return sorted(batches, key=lambda b: (b.at, b.identifier))
