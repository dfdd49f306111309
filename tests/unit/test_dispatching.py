"""The dispatcher's and the receipts' decisions, as pure functions: no database, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from server.domain.delivery import (
    CARRIER_TIMEOUT,
    CHANNEL_UNSUPPORTED,
    DELIVERED,
    EXPIRED,
    HANDSET_UNREACHABLE,
    REJECTED_AS_SPAM,
    UNCONFIRMED,
    ReceiptCode,
)
from server.domain.dispatching import (
    JITTER,
    MAX_RETRY_DELAY,
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
    WithCarrier,
    backoff,
    next_step,
    settle,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(max_attempts=3, first_delay=timedelta(seconds=2))
TIMEOUT = timedelta(days=2)
SMS, RCS_THEN_SMS = ("sms",), ("rcs", "sms")
CARRIER_OWN = ReceiptCode("7F", "Absent subscriber", False)


@pytest.mark.parametrize(
    ("outcome", "tried", "step"),
    [
        (Accepted(receipt=DELIVERED), Try(SMS, 0, 1), Finish(DELIVERED)),
        (Accepted(receipt=CARRIER_OWN), Try(SMS, 0, 1), Finish(CARRIER_OWN)),
        (Accepted(("c-1", "c-2")), Try(SMS, 0, 1), WithCarrier(("c-1", "c-2"), NOW + TIMEOUT)),
        (Accepted(), Try(SMS, 0, 1), Finish(UNCONFIRMED)),  # nothing a receipt could name
        (Rejected(REJECTED_AS_SPAM), Try(RCS_THEN_SMS, 0, 1), Finish(REJECTED_AS_SPAM)),
        (Unsupported("no RCS"), Try(RCS_THEN_SMS, 0, 1), Requeue(1, 0, NOW)),
        (Unsupported("no SMS"), Try(RCS_THEN_SMS, 1, 1), Finish(CHANNEL_UNSUPPORTED)),
        (TryLater("timeout"), Try(SMS, 0, 3), Finish(CARRIER_TIMEOUT)),
        # a timeout is no reason to fall back: the same channel, later
        (TryLater("timeout"), Try(RCS_THEN_SMS, 0, 1), Requeue(0, 1, NOW + timedelta(seconds=2))),
        (TryLater("timeout"), Try(SMS, 0, 2), Requeue(0, 2, NOW + timedelta(seconds=4))),
    ],
)
def test_each_answer_moves_the_message_on_as_documented(
    outcome: Outcome, tried: Try, step: Step
) -> None:
    assert next_step(outcome, tried, NOW, POLICY, TIMEOUT, jitter_draw=0.5) == step


def test_a_backoff_doubles_spreads_by_the_jitter_and_stops_at_the_cap() -> None:
    assert backoff(1, POLICY, 0.5) == timedelta(seconds=2)
    assert backoff(3, POLICY, 0.5) == timedelta(seconds=8)
    assert backoff(1, POLICY, 0.0) == timedelta(seconds=2) * (1 - JITTER)
    assert backoff(1, POLICY, 0.999999) == pytest.approx(
        timedelta(seconds=2) * (1 + JITTER), abs=timedelta(milliseconds=1)
    )
    assert backoff(100, POLICY, 0.5) == MAX_RETRY_DELAY


@pytest.mark.parametrize(
    ("receipts", "expired", "final"),
    [
        ([None], False, None),
        ([DELIVERED], False, DELIVERED),
        ([DELIVERED, None, DELIVERED], False, None),
        ([DELIVERED, DELIVERED, DELIVERED], False, DELIVERED),
        ([None, HANDSET_UNREACHABLE, None], False, HANDSET_UNREACHABLE),  # one part fails it
        ([CARRIER_OWN, HANDSET_UNREACHABLE], False, CARRIER_OWN),  # the first failed part
        ([DELIVERED, None], True, EXPIRED),
        ([DELIVERED, DELIVERED], True, DELIVERED),  # its receipts came: no expiry
        ([HANDSET_UNREACHABLE, None], True, HANDSET_UNREACHABLE),
        ([], True, EXPIRED),
        ([], False, None),
    ],
)
def test_a_message_with_the_carrier_is_settled_by_its_parts_receipts(
    receipts: list[ReceiptCode | None], expired: bool, final: ReceiptCode | None
) -> None:
    assert settle(receipts, expired) == final
