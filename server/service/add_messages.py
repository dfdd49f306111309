"""The AddMessages use case: authenticate, validate, assign senders, queue, all or nothing."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from server.config import Limits
from server.domain.errors import (
    Abandoned,
    IdConflict,
    InvalidRequest,
    NoSharedSenders,
    Unauthenticated,
    Violation,
)
from server.domain.ids import time_ordered_uuid
from server.domain.keys import hash_key
from server.domain.model import AcceptedMessage, MessageDraft, OutgoingMessage, SenderType
from server.domain.validation import validate_messages
from server.service.clock import Environment
from server.service.group_commit import GroupCommit
from server.storage.errors import ConflictingWrite
from server.storage.messages import NewMessage
from server.storage.unit_of_work import UnitOfWork

ATTEMPTS = 3
"""A concurrent request storing the same message id makes ours retry, then replay it."""


@dataclass(frozen=True)
class AddMessagesCommand:
    api_key: str | None
    messages: Sequence[MessageDraft]
    defaults: MessageDraft | None = None
    dry_run: bool = False
    transport_violations: Sequence[Violation] = ()
    """Rules the transport checked (the JSON query string), reported with the messages'."""
    deadline: float | None = None
    """When the caller stops waiting, as a time.monotonic() value: its gRPC deadline, or the
    server's own request timeout for a call without one (JSON through Envoy)."""
    cancelled: Callable[[], bool] = lambda: False
    """True once the caller has gone (the transport knows: a cancelled call, a server stop)."""

    def abandoned(self) -> bool:
        """Nobody will read the answer: committing now would store messages whose sender was
        told they failed, and a resend without ids would store them twice."""
        past_deadline = self.deadline is not None and time.monotonic() >= self.deadline
        return past_deadline or self.cancelled()


@dataclass
class AddMessages:
    """Queues a batch; a returned list means every message is committed (or, dry, would be)."""

    unit_of_work: Callable[[], UnitOfWork]
    limits: Limits = field(default_factory=Limits)
    environment: Environment = field(
        default_factory=lambda: Environment(new_uuid=time_ordered_uuid)
    )
    group_commit: GroupCommit | None = None
    """Given, concurrent requests share transactions (see group_commit)."""
    grouped_at_most: int | None = None
    """A request with more messages runs in a transaction of its own; None: none does."""

    def __call__(
        self,
        command: AddMessagesCommand,
        authenticated: Callable[[str], None] = lambda _account_id: None,
    ) -> list[AcceptedMessage]:
        """`authenticated` hears the account id once the key is known, so that the caller can
        attribute the request, a refused one included."""
        now = self.environment.now()
        outgoing: list[OutgoingMessage] = []
        violations = list(command.transport_violations)
        try:
            outgoing = validate_messages(command.messages, command.defaults, self.limits, now)
        except InvalidRequest as error:
            violations += error.violations
        # Reported after authentication, which always comes first.
        invalid = InvalidRequest(violations) if violations else None
        api_key = command.api_key
        if not api_key:
            raise Unauthenticated("an API key is required: the `key` query parameter or x-api-key")

        # Made before the transaction, which under group commit runs one request at a time.
        new_uuid = self.environment.new_uuid
        ids = [(new_uuid(), new_uuid()) for _ in outgoing]
        for message in outgoing:
            if message.id is not None:
                message.fingerprint()  # computed once, kept; without an id, never needed

        def work(uow: UnitOfWork) -> list[AcceptedMessage]:
            return self._transaction(
                uow, command, api_key, outgoing, ids, invalid, now, authenticated
            )

        for attempt in range(1, ATTEMPTS + 1):
            if command.abandoned():
                raise Abandoned()  # the caller has gone: take no connection, no lock
            try:
                if self.group_commit is not None and (
                    self.grouped_at_most is None or len(outgoing) <= self.grouped_at_most
                ):
                    return self.group_commit.run(work, command.abandoned)
                with self.unit_of_work() as uow:
                    return work(uow)
            except ConflictingWrite:
                if attempt == ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def _transaction(
        self,
        uow: UnitOfWork,
        command: AddMessagesCommand,
        api_key: str,
        outgoing: list[OutgoingMessage],
        ids: list[tuple[str, str]],
        invalid: InvalidRequest | None,
        now: datetime,
        authenticated: Callable[[str], None],
    ) -> list[AcceptedMessage]:
        """One attempt, in `uow`'s transaction (or its savepoint, under group commit)."""
        dry_run = command.dry_run
        uow.finish_by(command.deadline)
        account_id = uow.keys.account_for(hash_key(api_key))
        if account_id is None:
            raise Unauthenticated("unknown or revoked API key")
        authenticated(account_id)
        if invalid is not None:
            raise invalid
        accepted, new = self._accept(uow, account_id, outgoing, ids, dry_run, now)
        if not dry_run:
            uow.messages.add_many(account_id, new, now)
            if command.abandoned():
                raise Abandoned()  # rolled back: the caller hears a failure, and it is one
            uow.commit()
        return accepted

    def _accept(
        self,
        uow: UnitOfWork,
        account_id: str,
        outgoing: list[OutgoingMessage],
        ids: list[tuple[str, str]],
        dry_run: bool,
        now: datetime,
    ) -> tuple[list[AcceptedMessage], list[NewMessage]]:
        """Every message's result, in order, and the new messages that must be stored;
        `ids` holds each message's (message_uuid, batch_uuid) should it be new."""
        stored = uow.messages.by_client_ids(
            account_id, {m.client_id for m in outgoing if m.client_id is not None}
        )
        fresh = [m for m in outgoing if m.client_id not in stored]
        shared_senders = self._shared_senders(
            uow,
            account_id,
            {m.to for m in fresh if m.sender_type is SenderType.SHARED},
            dry_run,
            now,
        )
        accepted: list[AcceptedMessage] = []
        new: list[NewMessage] = []
        for index, (message, (message_uuid, batch_uuid)) in enumerate(
            zip(outgoing, ids, strict=True)
        ):
            previous = stored.get(message.client_id) if stored and message.client_id else None
            if previous is not None:
                if previous.fingerprint != message.fingerprint():
                    raise IdConflict(f"messages[{index}].id", message.id or "")
                accepted.append(previous.accepted)  # the stored answer, as first given
                continue
            result = AcceptedMessage.of(
                message,
                sender=message.sender_id or shared_senders[message.to],
                message_uuid=message_uuid,
                batch_uuid=batch_uuid,
            )
            accepted.append(result)
            new.append(NewMessage(message, result))
        return accepted, new

    def _shared_senders(
        self,
        uow: UnitOfWork,
        account_id: str,
        destinations: set[str],
        dry_run: bool,
        now: datetime,
    ) -> dict[str, str]:
        """The spec's two steps: reuse the account's sender for the number, else pick at random."""
        if not destinations:
            return {}
        pinned = uow.senders.pinned(account_id, destinations)
        unpinned = sorted(destinations - pinned.keys())
        if not unpinned:
            return pinned
        pool = uow.senders.pool()
        if not pool:
            raise NoSharedSenders()
        choices = {destination: self.environment.rng.choice(pool) for destination in unpinned}
        if dry_run:
            return pinned | choices
        uow.senders.pin(account_id, choices, now)
        # Read back: a concurrent request may have pinned some destinations first, and wins.
        return choices | uow.senders.pinned(account_id, destinations)
