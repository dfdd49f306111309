"""The batch use cases: a batch's receipts, the pending batches, cancelling, the receipt codes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from server.domain.batches import BatchReport, PendingBatch, pending_batches
from server.domain.delivery import RECEIPT_CODES, MessageStatus, ReceiptCode
from server.domain.errors import (
    BatchAlreadySent,
    BatchNotFound,
    InvalidRequest,
    Unauthenticated,
    Violation,
)
from server.domain.keys import hash_key
from server.service.clock import Environment
from server.storage.unit_of_work import UnitOfWork

Authenticated = Callable[[str], None]
"""Hears the account id once the key is known, so that the caller can attribute the call."""


@dataclass(frozen=True)
class BatchCall:
    """Who asks, and the rules the transport already checked (the JSON query string)."""

    api_key: str | None
    transport_violations: Sequence[Violation] = ()


def _nobody(_account_id: str) -> None:
    pass


@dataclass
class Batches:
    """Each call is one transaction of its own, scoped to the key's account."""

    unit_of_work: Callable[[], UnitOfWork]
    environment: Environment = field(default_factory=Environment)

    def report(
        self,
        call: BatchCall,
        batch_uuid: str,
        details: bool,
        authenticated: Authenticated = _nobody,
    ) -> BatchReport:
        """The batch's counts, and with `details` every message's receipt."""
        with self.unit_of_work() as uow:
            account_id = _account(uow, call, authenticated)
            messages = uow.batches.messages(account_id, _canonical(batch_uuid))
            if not messages:
                raise BatchNotFound(batch_uuid)
            return BatchReport.of(messages, details)

    def pending(
        self, call: BatchCall, authenticated: Authenticated = _nobody
    ) -> list[PendingBatch]:
        """The account's scheduled batches not yet released, soonest first."""
        with self.unit_of_work() as uow:
            account_id = _account(uow, call, authenticated)
            return pending_batches(uow.batches.pending_messages(account_id))

    def cancel(
        self, call: BatchCall, batch_uuid: str, authenticated: Authenticated = _nobody
    ) -> None:
        """Cancels every message of the batch, or none: only while all are still queued. A
        message claimed meanwhile (the UPDATE skips it) leaves the batch sent: rolled back."""
        canonical = _canonical(batch_uuid)
        with self.unit_of_work() as uow:
            account_id = _account(uow, call, authenticated)
            cancelled = uow.batches.cancel_queued(account_id, canonical, self.environment.now())
            states = set(uow.batches.statuses(account_id, canonical))
            if not states or (not cancelled and states == {MessageStatus.CANCELLED}):
                # Unknown, another account's, or cancelled before: the same answer for each.
                raise BatchNotFound(batch_uuid)
            if states != {MessageStatus.CANCELLED}:
                raise BatchAlreadySent(canonical)  # leaving the block rolls the cancel back
            uow.commit()

    def receipt_codes(self, call: BatchCall) -> tuple[ReceiptCode, ...]:
        """Every code the service reports; public, so no key is asked for."""
        if call.transport_violations:
            raise InvalidRequest(call.transport_violations)
        return RECEIPT_CODES


def _account(uow: UnitOfWork, call: BatchCall, authenticated: Authenticated) -> str:
    """The key's account; authentication is answered before a bad query string."""
    if not call.api_key:
        raise Unauthenticated("an API key is required: the `key` query parameter or x-api-key")
    account_id = uow.keys.account_for(hash_key(call.api_key))
    if account_id is None:
        raise Unauthenticated("unknown or revoked API key")
    authenticated(account_id)
    if call.transport_violations:
        raise InvalidRequest(call.transport_violations)
    return account_id


def _canonical(batch_uuid: str) -> str:
    """Batch identifiers are stored as lower-case UUIDs: any spelling of one finds it, and
    anything else finds nothing (NOT_FOUND, like any unknown batch)."""
    try:
        return str(uuid.UUID(batch_uuid))
    except ValueError:
        return ""
