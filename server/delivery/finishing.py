"""The one place a message reaches its final state: its row and its receipt webhook, written
together, whether a send's answer, a carrier's receipt or the receipt timeout ends it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from server.domain.delivery import (
    AttemptOutcome,
    MessageStatus,
    ReceiptCode,
    receipt_webhook_body,
)
from server.domain.dispatching import Matched, settle
from server.json_logs import FIELDS
from server.storage.dispatch import ClaimedMessage
from server.storage.unit_of_work import UnitOfWork

log = logging.getLogger("mplus.dispatch")


class FinishRecorder(Protocol):
    def finished(self, status: MessageStatus, code: str) -> None:
        """A message reached its final `status` (delivered or failed) with receipt `code`;
        heard once the state is committed, once per message."""
        ...


class Unrecorded:
    """The recorder by default, of the dispatcher and of the receipt intake: hears nothing."""

    def sent(self, channel: str, outcome: AttemptOutcome, seconds: float) -> None:
        pass

    def received(self, carrier: str, matched: Matched) -> None:
        pass

    def finished(self, status: MessageStatus, code: str) -> None:
        pass


@dataclass(frozen=True)
class Finished:
    """A message's final state, written (not yet committed)."""

    receipt: ReceiptCode
    channel: str | None
    attempts: int

    @property
    def status(self) -> MessageStatus:
        return MessageStatus.DELIVERED if self.receipt.delivered else MessageStatus.FAILED


def finish(
    uow: UnitOfWork,
    message: ClaimedMessage,
    receipt: ReceiptCode,
    now: datetime,
    channel: str | None,
    attempts: int,
) -> Finished | None:
    """The final state and, when the message has a callback, its receipt webhook; `channel`
    and `attempts` those of the try that ended it. None, and nothing written, when the
    message is no longer as `message` found it (a lease lost, or already settled): that
    keeps the webhook to one per message."""
    if not uow.dispatch.finish(message, receipt, now, channel, attempts):
        return None
    if message.callback:
        body = receipt_webhook_body(
            message.destination, message.batch_uuid, message.message_uuid, receipt
        )
        uow.webhooks.add(message.message_uuid, message.account_id, message.callback, body, now)
    return Finished(receipt, channel, attempts)


def settle_with_carrier(
    uow: UnitOfWork,
    message: ClaimedMessage,
    receipts: list[ReceiptCode | None],
    now: datetime,
    expired: bool,
) -> Finished | None:
    """Finishes a message with the carrier once its parts' `receipts` decide it (see
    domain.dispatching.settle); None while it waits, or when it was no longer there."""
    receipt = settle(receipts, expired)
    if receipt is None:
        return None
    return finish(uow, message, receipt, now, message.channel, message.attempts)


def log_finished(
    message: ClaimedMessage,
    finished: Finished,
    recorder: FinishRecorder,
    fields: dict[str, object],
) -> None:
    """The one line a message's final state writes, and its count; once committed."""
    status, receipt = finished.status, finished.receipt
    line = {
        **fields,
        "message_uuid": message.message_uuid,
        "batch_uuid": message.batch_uuid,
        "status": status.value,
        "channel": finished.channel,
        "code": receipt.code,
        "attempts": finished.attempts,
        "callback": message.callback is not None,
    }
    log.info(f"message {status.value}", extra={FIELDS: line})
    recorder.finished(status, receipt.code)
