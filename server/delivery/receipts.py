"""Receipts from carriers, whichever driver's inbound side brings them: each one recorded, and
its message settled, in one transaction committed before the carrier is acknowledged."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from server.delivery.finishing import (
    Finished,
    FinishRecorder,
    Unrecorded,
    log_finished,
    settle_with_carrier,
)
from server.domain.delivery import ReceiptCode
from server.domain.dispatching import Matched
from server.json_logs import FIELDS
from server.service.clock import Environment
from server.storage.dispatch import ClaimedMessage
from server.storage.unit_of_work import UnitOfWork

log = logging.getLogger("mplus.receipts")


@dataclass(frozen=True)
class CarrierReceipt:
    """What a carrier reports of one part: its id for the part, and the part's receipt."""

    carrier_id: str
    receipt: ReceiptCode


class ReceiptRecorder(FinishRecorder, Protocol):
    def received(self, carrier: str, matched: Matched) -> None:
        """A receipt from `carrier` was committed, and met `matched`."""
        ...


@dataclass
class ReceiptIntake:
    """The door of every driver's inbound side for receipts.

    A receipt may come before the send's answer is recorded, twice, or for a part of a
    message whose other parts are still out: the carrier store (storage.carrier) keeps each
    id's first receipt, and the message is settled from all its parts' receipts, under a lock
    on the message, so that two receipts settling it at once finish it once. A receipt for
    an id no send has named (yet) is kept, logged and counted: the send's answer, once
    recorded, settles its message with it."""

    unit_of_work: Callable[[], UnitOfWork]
    environment: Environment = field(default_factory=Environment)
    recorder: ReceiptRecorder = field(default_factory=Unrecorded)

    def __call__(self, carrier: str, receipts: Sequence[CarrierReceipt]) -> list[Matched]:
        """Records `receipts` from `carrier`; answers what each one met, once committed."""
        return self.collected(carrier, lambda _uow, _now: receipts)

    def collected(
        self,
        carrier: str,
        collect: Callable[[UnitOfWork, datetime], Sequence[CarrierReceipt]],
    ) -> list[Matched]:
        """Records the receipts `collect` finds in the same transaction (a sandbox's due
        ones, which it keeps locked from any other dispatcher's until the commit)."""
        now = self.environment.now()
        matched: list[Matched] = []
        finished: list[tuple[ClaimedMessage, Finished]] = []
        with self.unit_of_work() as uow:
            receipts = collect(uow, now)
            for report in receipts:
                recorded = uow.carrier.record_receipt(
                    carrier, report.carrier_id, report.receipt, now
                )
                matched.append(recorded.matched)
                if recorded.message_uuid is None:
                    continue
                message = uow.dispatch.sent_message(recorded.message_uuid)
                if message is None:  # final already: a part failed before, say
                    continue
                parts = uow.carrier.receipts(message.message_uuid)
                done = settle_with_carrier(uow, message, parts, now, expired=False)
                if done is not None:
                    finished.append((message, done))
            uow.commit()
        for report, result in zip(receipts, matched, strict=True):
            self.recorder.received(carrier, result)
            if result is not Matched.PART:
                fields = {"carrier": carrier, "carrier_id": report.carrier_id, "matched": result}
                level = logging.WARNING if result is Matched.NOTHING else logging.INFO
                log.log(
                    level, f"a receipt for no part we know ({result.value})", extra={FIELDS: fields}
                )
        for message, done in finished:
            log_finished(message, done, self.recorder, {"carrier": carrier})
        return matched
