"""What the carriers hold of ours: each part's carrier id, and the receipts that name them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, case, null, or_, select

from server.domain.delivery import MessageStatus, ReceiptCode, known_receipt_code
from server.domain.dispatching import Matched
from server.storage.tables import carrier_parts, queued_messages
from server.storage.upsert import upsertable_insert


@dataclass(frozen=True)
class RecordedReceipt:
    matched: Matched
    message_uuid: str | None = None


@dataclass(frozen=True)
class Unreported:
    """A part its carrier has not receipted yet, with what a sandbox needs to invent one."""

    carrier_id: str
    message_uuid: str
    destination: str


class CarrierRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def hand_over(
        self, carrier: str, carrier_ids: Sequence[str], message_uuid: str, now: datetime
    ) -> list[ReceiptCode | None]:
        """Records that `carrier` took the message's parts under `carrier_ids` (in part
        order), and answers each part's receipt, already there when it came first.

        An id names the latest part sent under it: carriers recycle their ids. A row another
        message held is taken over without its receipt, which was that message's; a row no
        message held yet keeps the receipt that came before this answer."""
        receipts: list[ReceiptCode | None] = []
        for part, carrier_id in enumerate(carrier_ids):
            statement = upsertable_insert(self._connection, carrier_parts).values(
                carrier=carrier,
                carrier_id=carrier_id,
                message_uuid=message_uuid,
                part=part,
                sent_at=now,
            )
            ours = or_(
                carrier_parts.c.message_uuid.is_(None),
                carrier_parts.c.message_uuid == message_uuid,
            )
            kept = {
                column: case((ours, carrier_parts.c[column]), else_=null())
                for column in ("receipt_code", "receipt_description", "received_at")
            }
            row = self._connection.execute(
                statement.on_conflict_do_update(
                    index_elements=[carrier_parts.c.carrier, carrier_parts.c.carrier_id],
                    set_={"message_uuid": message_uuid, "part": part, "sent_at": now, **kept},
                ).returning(carrier_parts.c.receipt_code, carrier_parts.c.receipt_description)
            ).one()
            receipts.append(_receipt(row.receipt_code, row.receipt_description))
        return receipts

    def record_receipt(
        self, carrier: str, carrier_id: str, receipt: ReceiptCode, now: datetime
    ) -> RecordedReceipt:
        """Keeps `receipt` for the part `carrier` knows as `carrier_id`, unless it has one.

        One statement whatever came first, so that a receipt and the send's answer naming the
        same id meet however they interleave: an INSERT of the receipt whose conflict with
        the part's row (or with an earlier receipt) becomes an UPDATE only where no receipt
        is kept. On PostgreSQL a concurrent insert of the same id waits for this one's
        transaction, then takes the conflict path; SQLite has one writer at a time."""
        values = {
            "receipt_code": receipt.code,
            "receipt_description": receipt.description,
            "received_at": now,
        }
        statement = upsertable_insert(self._connection, carrier_parts).values(
            carrier=carrier, carrier_id=carrier_id, **values
        )
        row = self._connection.execute(
            statement.on_conflict_do_update(
                index_elements=[carrier_parts.c.carrier, carrier_parts.c.carrier_id],
                set_=values,
                where=carrier_parts.c.receipt_code.is_(None),
            ).returning(carrier_parts.c.message_uuid)
        ).one_or_none()
        if row is None:
            return RecordedReceipt(Matched.DUPLICATE)
        if row.message_uuid is None:
            return RecordedReceipt(Matched.NOTHING)
        return RecordedReceipt(Matched.PART, row.message_uuid)

    def receipts(self, message_uuid: str) -> list[ReceiptCode | None]:
        """The receipt of each of the message's parts, in part order (None: not come yet)."""
        rows = self._connection.execute(
            select(carrier_parts.c.receipt_code, carrier_parts.c.receipt_description)
            .where(carrier_parts.c.message_uuid == message_uuid)
            .order_by(carrier_parts.c.part)
        )
        return [_receipt(row.receipt_code, row.receipt_description) for row in rows]

    def unreported(self, carrier: str, sent_by: datetime, limit: int) -> list[Unreported]:
        """Up to `limit` parts `carrier` took by `sent_by` and has not receipted (the oldest
        taken), in message order: receipts recorded in this order lock their messages in it,
        so two transactions never wait on each other's. On PostgreSQL the parts stay locked
        until the commit, and rows another transaction holds are passed over."""
        rows = self._connection.execute(
            select(
                carrier_parts.c.carrier_id,
                carrier_parts.c.message_uuid,
                carrier_parts.c.part,
                queued_messages.c.destination,
            )
            .join(queued_messages, queued_messages.c.message_uuid == carrier_parts.c.message_uuid)
            .where(
                carrier_parts.c.carrier == carrier,
                carrier_parts.c.received_at.is_(None),
                carrier_parts.c.sent_at <= sent_by,
                queued_messages.c.status == MessageStatus.SENT,
            )
            .order_by(carrier_parts.c.sent_at)
            .limit(limit)
            .with_for_update(skip_locked=True, of=carrier_parts)
        )
        ordered = sorted(rows, key=lambda row: (row.message_uuid, row.part))
        return [Unreported(row.carrier_id, row.message_uuid, row.destination) for row in ordered]


def _receipt(code: str | None, description: str | None) -> ReceiptCode | None:
    """A stored receipt: delivered only when it is a code this service lists as delivered (a
    carrier's own code never counts as delivered)."""
    if code is None:
        return None
    known = known_receipt_code(code)
    delivered = known is not None and known.delivered
    return ReceiptCode(code, description or (known.description if known else ""), delivered)
