"""The dispatcher: claims due messages, sends each through its channels, records what came of it.

One claim (a short transaction) leases a batch of due messages; each is then sent outside any
transaction, and its outcome recorded in a transaction of its own, only while the lease still
holds. A dispatcher that dies mid-send loses nothing: the lease runs out and another claims
the message again. None reports one twice: the final state and the receipt webhook are written
together, by the lease holder only, and the webhook is keyed by the message.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from server.config import Delivery
from server.delivery.drivers import (
    Accepted,
    ChannelDriver,
    Dispatch,
    Outcome,
    Rejected,
    TryLater,
    Unsupported,
)
from server.domain.delivery import (
    CARRIER_TIMEOUT,
    CHANNEL_UNSUPPORTED,
    AttemptOutcome,
    MessageStatus,
    ReceiptCode,
    receipt_webhook_body,
)
from server.json_logs import FIELDS
from server.service.clock import Environment
from server.storage.dispatch import ClaimedMessage
from server.storage.errors import ConflictingWrite, StorageUnavailable
from server.storage.unit_of_work import UnitOfWork

log = logging.getLogger("mplus.dispatch")

MAX_RETRY_DELAY = timedelta(hours=1)
"""The longest wait before a carrier timeout is tried again, however many tries came before."""
JITTER = 0.2
"""A retry waits its backoff ± this fraction, so that messages failed together spread out."""


class DispatchRecorder(Protocol):
    """Hears what the dispatcher did, to count it (metrics); the rules never depend on it."""

    def sent(self, channel: str, outcome: AttemptOutcome, seconds: float) -> None:
        """A driver call on `channel` answered `outcome` (ERROR: it raised) in `seconds`."""
        ...

    def finished(self, status: MessageStatus, code: str) -> None:
        """A message reached its final `status` (delivered or failed) with receipt `code`;
        heard once the state is committed, once per message."""
        ...


class Unrecorded:
    """The recorder by default: hears nothing."""

    def sent(self, channel: str, outcome: AttemptOutcome, seconds: float) -> None:
        pass

    def finished(self, status: MessageStatus, code: str) -> None:
        pass


@dataclass(frozen=True)
class Finished:
    """A message's final state, written (not yet committed) under its lease."""

    receipt: ReceiptCode
    channel: str | None
    attempts: int

    @property
    def status(self) -> MessageStatus:
        return MessageStatus.DELIVERED if self.receipt.delivered else MessageStatus.FAILED


Step = Finished | bool
"""What a write under a lease came to: the message finished, moved on (True), or nothing
written because the lease was lost (False)."""


@dataclass
class Dispatcher:
    """Drains the queue: `run_once()` in a loop, with a pause whenever it answers 0."""

    unit_of_work: Callable[[], UnitOfWork]
    driver: ChannelDriver
    delivery: Delivery
    environment: Environment = field(default_factory=Environment)
    owner: str | None = None
    """This dispatcher's name in its logs; the host and process id by default. Leases are not
    held in its name: each claim takes a fresh random token."""
    recorder: DispatchRecorder = field(default_factory=Unrecorded)
    stopping: Callable[[], bool] = lambda: False
    """True once the process is asked to stop: the round then ends after the send in hand."""

    def __post_init__(self) -> None:
        self._name = self.owner or f"{socket.gethostname()}:{os.getpid()}"

    def run_once(self) -> int:
        """Claims up to `claim_batch` due messages and takes each one step: sent (or tried),
        or finished when its receipt is due. Answers how many it handled: 0 when none was due
        (or the database could not be reached: the message is logged). Asked to stop, it
        hands back the claims it has not started, due at once for any dispatcher, rather than
        leave them to wait out their lease."""
        claims = self._claim()
        for position, claim in enumerate(claims):
            if self.stopping():
                self._release(claims[position:])
                return position
            try:
                self._handle(claim)
            except (StorageUnavailable, ConflictingWrite):
                # Nothing recorded: the lease runs out and the message is claimed again.
                log.warning(
                    "the outcome of a send could not be recorded; it is retried after its lease",
                    exc_info=True,
                    extra={FIELDS: self._fields(claim)},
                )
        return len(claims)

    def _release(self, claims: list[ClaimedMessage]) -> None:
        try:
            with self.unit_of_work() as uow:
                released = uow.dispatch.release(claims, self.environment.now())
                uow.commit()
        except (StorageUnavailable, ConflictingWrite):
            log.warning(
                "unstarted claims could not be handed back; they are claimed again after "
                "their lease",
                exc_info=True,
                extra={FIELDS: {"owner": self._name}},
            )
            return
        log.info(
            "stopping: handed back %d claimed messages not yet sent",
            released,
            extra={FIELDS: {"owner": self._name}},
        )

    def _claim(self) -> list[ClaimedMessage]:
        now = self.environment.now()
        lease_until = now + timedelta(milliseconds=self.delivery.lease_ms)
        try:
            with self.unit_of_work() as uow:
                claims = uow.dispatch.claim_due(
                    now, lease_until, self.environment.new_uuid(), self.delivery.claim_batch
                )
                uow.commit()
        except (StorageUnavailable, ConflictingWrite) as error:
            log.warning(
                "no messages could be claimed: %s", error, extra={FIELDS: {"owner": self._name}}
            )
            return []
        return claims

    def _handle(self, claim: ClaimedMessage) -> None:
        if claim.status is MessageStatus.SENT:
            receipt = claim.receipt
            assert receipt is not None, "a sent message keeps its announced receipt"
            self._in_lease(claim, lambda uow, now: self._finish(uow, claim, receipt, now))
            return
        if claim.channel_index >= len(claim.channels):  # nothing left to try (bad data)
            unsupported = CHANNEL_UNSUPPORTED
            self._in_lease(claim, lambda uow, now: self._finish(uow, claim, unsupported, now))
            return
        if self.environment.now() >= claim.due_at:
            # Slow sends before it used up the lease: another dispatcher may hold the message
            # by now, and a second send would reach the handset twice. Left to whoever claims it.
            log.warning("lease ran out before the send", extra={FIELDS: self._fields(claim)})
            return
        dispatch = Dispatch(
            message_uuid=claim.message_uuid,
            batch_uuid=claim.batch_uuid,
            account_id=claim.account_id,
            destination=claim.destination,
            sender=claim.sender,
            body=claim.body,
            channel=claim.channels[claim.channel_index],
            attempt=claim.attempts + 1,
        )
        started = time.perf_counter()
        try:
            outcome: Outcome = self.driver.send(dispatch)
            kind = _kind(outcome)
        except Exception as error:  # a driver's bug must not stop the queue nor lose a message
            log.exception("the channel driver failed", extra={FIELDS: self._fields(claim)})
            outcome, kind = TryLater(f"driver error: {type(error).__name__}"), AttemptOutcome.ERROR
        self.recorder.sent(dispatch.channel, kind, time.perf_counter() - started)

        def record(uow: UnitOfWork, now: datetime) -> Step:
            step = self._next_state(uow, claim, dispatch, outcome, now)
            if step is False:
                return False
            code, description = _attempt_details(outcome)
            uow.dispatch.record_attempt(
                claim.message_uuid, dispatch.channel, dispatch.attempt, kind, code, description, now
            )
            return step

        self._in_lease(claim, record)

    def _in_lease(
        self, claim: ClaimedMessage, write: Callable[[UnitOfWork, datetime], Step]
    ) -> None:
        """Runs `write` in a transaction of its own and commits, unless it answers False: the
        lease was lost to another dispatcher, and nothing at all is recorded. A message it
        finished is logged and recorded once committed."""
        with self.unit_of_work() as uow:
            step = write(uow, self.environment.now())
            if step is False:
                log.info(
                    "lease lost: another dispatcher claimed the message; nothing recorded",
                    extra={FIELDS: self._fields(claim)},
                )
                return
            uow.commit()
        if isinstance(step, Finished):
            self._finished(claim, step)

    def _finished(self, claim: ClaimedMessage, finished: Finished) -> None:
        """The one line a message's final state writes, and its count."""
        status, receipt = finished.status, finished.receipt
        fields = {
            **self._fields(claim),
            "status": status.value,
            "channel": finished.channel,
            "code": receipt.code,
            "attempts": finished.attempts,
            "callback": claim.callback is not None,
        }
        log.info(f"message {status.value}", extra={FIELDS: fields})
        self.recorder.finished(status, receipt.code)

    def _next_state(
        self,
        uow: UnitOfWork,
        claim: ClaimedMessage,
        dispatch: Dispatch,
        outcome: Outcome,
        now: datetime,
    ) -> Step:
        channel, attempt = dispatch.channel, dispatch.attempt
        if isinstance(outcome, Accepted) and outcome.receipt_after_s > 0:
            receipt_due_at = now + timedelta(seconds=outcome.receipt_after_s)
            return uow.dispatch.mark_sent(claim, channel, attempt, outcome.receipt, receipt_due_at)
        if isinstance(outcome, Accepted | Rejected):
            return self._finish(uow, claim, outcome.receipt, now, dispatch)
        if isinstance(outcome, Unsupported):
            if claim.channel_index + 1 < len(claim.channels):
                return uow.dispatch.requeue(claim, channel, claim.channel_index + 1, 0, now)
            return self._finish(uow, claim, CHANNEL_UNSUPPORTED, now, dispatch)
        if attempt >= self.delivery.max_attempts:
            return self._finish(uow, claim, CARRIER_TIMEOUT, now, dispatch)
        retry_at = now + self._backoff(attempt)
        return uow.dispatch.requeue(claim, channel, claim.channel_index, attempt, retry_at)

    def _finish(
        self,
        uow: UnitOfWork,
        claim: ClaimedMessage,
        receipt: ReceiptCode,
        now: datetime,
        tried: Dispatch | None = None,
    ) -> Step:
        """The final state and, when the message has a callback, its receipt webhook. `tried`
        is the try that ended it, if a try did."""
        channel, attempts = (
            (tried.channel, tried.attempt) if tried else (claim.channel, claim.attempts)
        )
        if not uow.dispatch.finish(claim, receipt, now, channel, attempts):
            return False
        if claim.callback:
            body = receipt_webhook_body(
                claim.destination, claim.batch_uuid, claim.message_uuid, receipt
            )
            uow.webhooks.add(claim.message_uuid, claim.account_id, claim.callback, body, now)
        return Finished(receipt, channel, attempts)

    def _backoff(self, attempts: int) -> timedelta:
        """`retry_ms`, doubled for each try after the first, ± JITTER, at most MAX_RETRY_DELAY."""
        exponent = min(attempts - 1, 32)  # 2 s · 2**32 is decades: past the cap already
        base = timedelta(milliseconds=self.delivery.retry_ms * 2**exponent)
        jitter = 1 + JITTER * (2 * self.environment.rng.random() - 1)
        return min(base, MAX_RETRY_DELAY) * jitter

    def _fields(self, claim: ClaimedMessage) -> dict[str, object]:
        return {
            "owner": self._name,
            "lease": claim.lease_owner,
            "message_uuid": claim.message_uuid,
            "batch_uuid": claim.batch_uuid,
        }


def _kind(outcome: Outcome) -> AttemptOutcome:
    if isinstance(outcome, Accepted):
        return AttemptOutcome.ACCEPTED
    if isinstance(outcome, Rejected):
        return AttemptOutcome.REJECTED
    if isinstance(outcome, Unsupported):
        return AttemptOutcome.UNSUPPORTED
    return AttemptOutcome.TRY_LATER


def _attempt_details(outcome: Outcome) -> tuple[str | None, str | None]:
    """The code and text the attempts log keeps: a receipt's, or the reason given."""
    if isinstance(outcome, Accepted | Rejected):
        return outcome.receipt.code, outcome.receipt.description
    return None, outcome.reason
