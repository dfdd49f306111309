"""The dispatcher: claims due messages, sends each through its channels, records what came of it.

One claim (a short transaction) leases a batch of due messages; each is then sent outside any
transaction, and its outcome recorded in a transaction of its own, only while the lease still
holds. A dispatcher that dies mid-send loses nothing: the lease runs out and another claims
the message again. None reports one twice: the final state and the receipt webhook are written
together (delivery.finishing), by the lease holder or, for a message with the carrier, by
whichever of a receipt and its expiry comes first, and the webhook is keyed by the message.
What an outcome means (the next state, a backoff, a fallback) is domain.dispatching's to
decide.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from server.config import Delivery
from server.delivery.drivers.base import ChannelDriver, Dispatch
from server.delivery.finishing import (
    Finished,
    FinishRecorder,
    Unrecorded,
    finish,
    log_finished,
    settle_with_carrier,
)
from server.domain.delivery import CHANNEL_UNSUPPORTED, AttemptOutcome, MessageStatus
from server.domain.dispatching import (
    Accepted,
    Finish,
    Outcome,
    Rejected,
    Requeue,
    RetryPolicy,
    Step,
    Try,
    TryLater,
    Unsupported,
    next_step,
)
from server.json_logs import FIELDS
from server.service.clock import Environment
from server.storage.dispatch import ClaimedMessage
from server.storage.errors import ConflictingWrite, StorageUnavailable
from server.storage.unit_of_work import UnitOfWork

log = logging.getLogger("mplus.dispatch")


class DispatchRecorder(FinishRecorder, Protocol):
    """Hears what the dispatcher did, to count it (metrics); the rules never depend on it."""

    def sent(self, channel: str, outcome: AttemptOutcome, seconds: float) -> None:
        """A driver call on `channel` answered `outcome` (ERROR: it raised) in `seconds`."""
        ...


Written = Finished | bool
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
        self._policy = RetryPolicy(
            self.delivery.max_attempts, timedelta(milliseconds=self.delivery.retry_ms)
        )

    def run_once(self) -> int:
        """Claims up to `claim_batch` due messages and takes each one step: sent (or tried),
        or, with the carrier past its receipt timeout, settled. Answers how many it handled:
        0 when none was due (or the database could not be reached: the message is logged).
        Asked to stop, it hands back the claims it has not started, due at once for any
        dispatcher, rather than leave them to wait out their lease."""
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
        if claim.status is MessageStatus.SENT:  # with the carrier past its receipt timeout
            self._in_lease(claim, lambda uow, now: self._expire(uow, claim, now))
            return
        if claim.channel_index >= len(claim.channels):  # nothing left to try (bad data)
            unsupported = CHANNEL_UNSUPPORTED
            self._in_lease(
                claim,
                lambda uow, now: (
                    finish(uow, claim, unsupported, now, claim.channel, claim.attempts) or False
                ),
            )
            return
        if self.environment.now() >= claim.due_at:
            # Slow sends before it used up the lease: another dispatcher may hold the message
            # by now, and a second send would reach the handset twice. Left to whoever claims it.
            log.warning("lease ran out before the send", extra={FIELDS: self._fields(claim)})
            return
        tried = Try(claim.channels, claim.channel_index, claim.attempts + 1)
        dispatch = Dispatch(
            message_uuid=claim.message_uuid,
            batch_uuid=claim.batch_uuid,
            account_id=claim.account_id,
            destination=claim.destination,
            sender=claim.sender,
            body=claim.body,
            channel=tried.channel,
            attempt=tried.attempt,
        )
        started = time.perf_counter()
        try:
            outcome: Outcome = self.driver.send(dispatch)
            kind = _kind(outcome)
        except Exception as error:  # a driver's bug must not stop the queue nor lose a message
            log.exception("the channel driver failed", extra={FIELDS: self._fields(claim)})
            outcome, kind = TryLater(f"driver error: {type(error).__name__}"), AttemptOutcome.ERROR
        self.recorder.sent(dispatch.channel, kind, time.perf_counter() - started)

        def record(uow: UnitOfWork, now: datetime) -> Written:
            written = self._record(uow, claim, tried, outcome, now)
            if written is False:
                return False
            code, description = _attempt_details(outcome)
            uow.dispatch.record_attempt(
                claim.message_uuid, tried.channel, tried.attempt, kind, code, description, now
            )
            return written

        self._in_lease(claim, record)

    def _in_lease(
        self, claim: ClaimedMessage, write: Callable[[UnitOfWork, datetime], Written]
    ) -> None:
        """Runs `write` in a transaction of its own and commits, unless it answers False: the
        lease was lost to another dispatcher, and nothing at all is recorded. A message it
        finished is logged and recorded once committed."""
        with self.unit_of_work() as uow:
            written = write(uow, self.environment.now())
            if written is False:
                log.info(
                    "lease lost: another dispatcher claimed the message, or a receipt settled "
                    "it; nothing recorded",
                    extra={FIELDS: self._fields(claim)},
                )
                return
            uow.commit()
        if isinstance(written, Finished):
            log_finished(
                claim, written, self.recorder, {"owner": self._name, "lease": claim.lease_owner}
            )

    def _record(
        self, uow: UnitOfWork, claim: ClaimedMessage, tried: Try, outcome: Outcome, now: datetime
    ) -> Written:
        """Moves the message on as domain.dispatching decides. A message the carrier took is
        handed over part by part before its row is touched (the order a receipt's
        transaction takes the same locks in), and settled at once by receipts that came
        before this answer."""
        step: Step = next_step(
            outcome,
            tried,
            now,
            self._policy,
            timedelta(seconds=self.delivery.receipt_timeout_s),
            self.environment.rng.random(),
        )
        if isinstance(step, Finish):
            return finish(uow, claim, step.receipt, now, tried.channel, tried.attempt) or False
        if isinstance(step, Requeue):
            return uow.dispatch.requeue(
                claim, tried.channel, step.channel_index, step.attempts, step.due_at
            )
        early = uow.carrier.hand_over(
            self.driver.carrier, step.carrier_ids, claim.message_uuid, now
        )
        if not uow.dispatch.mark_sent(claim, tried.channel, tried.attempt, step.expires_at):
            return False
        if all(receipt is None for receipt in early):
            return True
        sent = replace(
            claim,
            status=MessageStatus.SENT,
            lease_owner=None,
            channel=tried.channel,
            attempts=tried.attempt,
        )
        return settle_with_carrier(uow, sent, early, now, expired=False) or True

    def _expire(self, uow: UnitOfWork, claim: ClaimedMessage, now: datetime) -> Written:
        """A message with the carrier past its receipt timeout: its receipts settle it, and
        a part still without one ends it as expired."""
        receipts = uow.carrier.receipts(claim.message_uuid)
        return settle_with_carrier(uow, claim, receipts, now, expired=True) or False

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
    """The code and text the attempts log keeps: a receipt's, the carrier's ids, or the
    reason given."""
    if isinstance(outcome, Accepted | Rejected) and outcome.receipt is not None:
        return outcome.receipt.code, outcome.receipt.description
    if isinstance(outcome, Accepted):
        return None, "with the carrier as " + ", ".join(outcome.carrier_ids)
    return None, outcome.reason
