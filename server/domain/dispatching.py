"""What a carrier's answer and its receipts mean for a message: the dispatcher's and the
receipts' decisions, as pure functions of plain values (no clock, no database, no driver)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from server.domain.delivery import (
    CARRIER_TIMEOUT,
    CHANNEL_UNSUPPORTED,
    EXPIRED,
    UNCONFIRMED,
    ReceiptCode,
)

MAX_RETRY_DELAY = timedelta(hours=1)
"""The longest wait before a carrier timeout is tried again, however many tries came before."""
JITTER = 0.2
"""A retry waits its backoff ± this fraction, so that messages failed together spread out."""


@dataclass(frozen=True)
class Accepted:
    """The carrier took the message. With `receipt` it is final at once (a carrier that knows
    the outcome as it answers); without, it is with the carrier until a receipt names one of
    `carrier_ids`, the carrier's id for each part it took."""

    carrier_ids: tuple[str, ...] = ()
    receipt: ReceiptCode | None = None


@dataclass(frozen=True)
class Rejected:
    """The carrier refused the message for good: it fails with `receipt`."""

    receipt: ReceiptCode


@dataclass(frozen=True)
class Unsupported:
    """This channel cannot reach the handset: the message falls back to its next channel."""

    reason: str


@dataclass(frozen=True)
class TryLater:
    """A carrier timeout or another passing failure: this channel is tried again, later."""

    reason: str


Outcome = Accepted | Rejected | Unsupported | TryLater


@dataclass(frozen=True)
class Try:
    """One try of a message: where it stands among its channels, and this try's number."""

    channels: tuple[str, ...]
    channel_index: int
    attempt: int
    """This try's number on `channels[channel_index]`, from 1."""

    @property
    def channel(self) -> str:
        return self.channels[self.channel_index]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    """Tries per channel on a carrier timeout before the message fails."""
    first_delay: timedelta
    """The wait before the second try; doubled for each try after it."""


@dataclass(frozen=True)
class Finish:
    """The message is over: delivered or failed, as `receipt` says."""

    receipt: ReceiptCode


@dataclass(frozen=True)
class Requeue:
    """Back in the queue: the same channel again later, or the next channel at once."""

    channel_index: int
    attempts: int
    """Tries made on `channels[channel_index]` so far."""
    due_at: datetime


@dataclass(frozen=True)
class WithCarrier:
    """Taken by the carrier: its receipts for `carrier_ids` decide, unless none has come by
    `expires_at`."""

    carrier_ids: tuple[str, ...]
    expires_at: datetime


Step = Finish | Requeue | WithCarrier


def next_step(
    outcome: Outcome,
    tried: Try,
    now: datetime,
    policy: RetryPolicy,
    receipt_timeout: timedelta,
    jitter_draw: float,
) -> Step:
    """Where a message goes after `tried` answered `outcome`. `jitter_draw` is a number in
    [0, 1) that spreads a retry's backoff (see `backoff`).

    Accepted with a receipt, or rejected: final. Accepted without: with the carrier (an
    acceptance naming no part can never be receipted: unconfirmed at once). Unsupported: the
    next channel at once, none left fails (30). Try later: the same channel after a backoff,
    until `policy.max_attempts` tries fail it (41); a timeout is no reason to fall back."""
    if isinstance(outcome, Accepted):
        if outcome.receipt is not None:
            return Finish(outcome.receipt)
        if not outcome.carrier_ids:
            return Finish(UNCONFIRMED)
        return WithCarrier(outcome.carrier_ids, now + receipt_timeout)
    if isinstance(outcome, Rejected):
        return Finish(outcome.receipt)
    if isinstance(outcome, Unsupported):
        if tried.channel_index + 1 < len(tried.channels):
            return Requeue(tried.channel_index + 1, 0, now)
        return Finish(CHANNEL_UNSUPPORTED)
    if tried.attempt >= policy.max_attempts:
        return Finish(CARRIER_TIMEOUT)
    return Requeue(
        tried.channel_index, tried.attempt, now + backoff(tried.attempt, policy, jitter_draw)
    )


def backoff(attempts: int, policy: RetryPolicy, jitter_draw: float) -> timedelta:
    """`policy.first_delay`, doubled for each try after the first, ± JITTER (a `jitter_draw`
    of 0 takes the least, near 1 the most), never more than MAX_RETRY_DELAY ± JITTER."""
    exponent = min(attempts - 1, 32)  # 2 s · 2**32 is decades: past the cap already
    base: timedelta = min(policy.first_delay * 2**exponent, MAX_RETRY_DELAY)
    return base * (1 + JITTER * (2 * jitter_draw - 1))


class Matched(StrEnum):
    """What a carrier's receipt met when it was recorded (told back to the carrier, counted)."""

    PART = "part"
    """A part a send's answer named: its message may now be settled."""
    NOTHING = "nothing"
    """No part (yet) has that id: kept, for a send whose answer is still being recorded."""
    DUPLICATE = "duplicate"
    """That id had its receipt already: the first one stands, this one is dropped."""


def settle(receipts: Sequence[ReceiptCode | None], expired: bool) -> ReceiptCode | None:
    """The final receipt of a message with the carrier, from the receipts of its parts in
    order (None: not come yet), or None while it must wait.

    One failed part fails the message at once, with that part's receipt (the first failed,
    in part order); every part delivered delivers it; a part still without a receipt once
    `expired` ends it as EXPIRED."""
    for receipt in receipts:
        if receipt is not None and not receipt.delivered:
            return receipt
    if receipts and receipts[0] is not None and all(r is not None for r in receipts):
        return receipts[0]
    return EXPIRED if expired else None
