"""The wait between two posts of a refused receipt: doubling, capped, with equal jitter."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest

from server.config import Delivery
from server.delivery.webhooks import backoff


@pytest.mark.parametrize("attempts", range(1, 16))
def test_the_backoff_doubles_to_its_cap_with_equal_jitter(attempts: int) -> None:
    delivery = Delivery(webhook_backoff_ms=1000, webhook_backoff_cap_ms=3_600_000)
    ceiling = timedelta(milliseconds=min(1000 * 2 ** (attempts - 1), 3_600_000))
    waits = [backoff(attempts, delivery, random.Random(seed)) for seed in range(50)]
    assert all(ceiling / 2 <= wait <= ceiling for wait in waits)
    assert len(set(waits)) > 1, "jittered"


def test_a_huge_attempt_count_waits_the_cap() -> None:
    delivery = Delivery(webhook_backoff_ms=1000, webhook_backoff_cap_ms=60_000)
    assert backoff(10_000, delivery, random.Random(1)) <= timedelta(minutes=1)
