"""The ids the service assigns."""

from __future__ import annotations

import time
import uuid

from server.domain.ids import time_ordered_uuid


def test_ids_are_version_7_uuids_in_canonical_form() -> None:
    for _ in range(100):
        text = time_ordered_uuid()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122


def test_ids_carry_the_time_so_later_ones_sort_after() -> None:
    first = time_ordered_uuid()
    time.sleep(0.002)
    second = time_ordered_uuid()
    assert first < second
    milliseconds = uuid.UUID(second).int >> 80
    assert abs(milliseconds - time.time() * 1000) < 60_000


def test_ids_differ() -> None:
    assert len({time_ordered_uuid() for _ in range(10_000)}) == 10_000
