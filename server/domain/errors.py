"""Domain errors: what went wrong in the caller's terms. The API layer maps each to a status."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Violation:
    """One broken rule: the field path (`messages[2].from.value`), what is wrong, a reason code."""

    field: str
    description: str
    reason: str


class DomainError(Exception):
    """Base of every error a caller can cause; anything else is a bug or an outage."""


class InvalidRequest(DomainError):
    """The request breaks one or more rules; every violation is listed at once."""

    def __init__(self, violations: Sequence[Violation]) -> None:
        self.violations = tuple(violations)
        shown = "; ".join(f"{v.field}: {v.description}" for v in self.violations[:5])
        more = len(self.violations) - 5
        suffix = f"; and {more} more" if more > 0 else ""
        count = len(self.violations)
        noun = "violation" if count == 1 else "violations"
        super().__init__(f"invalid request ({count} {noun}): {shown}{suffix}")


class Unauthenticated(DomainError):
    """No key, or a key that is unknown or revoked."""


class IdConflict(DomainError):
    """A message id already names a stored message with different content."""

    def __init__(self, field: str, client_id: str) -> None:
        self.field = field
        self.client_id = client_id
        super().__init__(
            f"{field}: id {client_id} was already used for a message with different content"
        )


class NoSharedSenders(DomainError):
    """A shared sender was asked for but the shared sender pool is empty."""

    def __init__(self) -> None:
        super().__init__(
            "no shared sender IDs are available: the shared sender pool is empty "
            "(an operator adds them with `mplus senders add`)"
        )


class Abandoned(DomainError):
    """The caller stopped waiting (its deadline passed, or it went away) before the commit."""

    def __init__(self) -> None:
        super().__init__(
            "the request did not finish within its deadline, so nothing was stored "
            "(JSON requests get MPLUS_REQUEST_TIMEOUT_MS); retry it"
        )


class BatchNotFound(DomainError):
    """No such batch for this account: unknown, another account's, or cancelled (the same
    answer for each, so that another account's batch is never revealed)."""

    def __init__(self, batch_uuid: str) -> None:
        self.batch_uuid = batch_uuid[:64]  # as the caller spelt it, within reason
        super().__init__(f"batch {self.batch_uuid!r} not found")


class BatchAlreadySent(DomainError):
    """A batch cannot be cancelled: a message of it has left the queue (claimed, sent or
    finished)."""

    def __init__(self, batch_uuid: str) -> None:
        self.batch_uuid = batch_uuid
        super().__init__(
            f"batch {batch_uuid} cannot be cancelled: it has already been released for "
            "sending (only a batch whose messages are all still queued can be)"
        )
