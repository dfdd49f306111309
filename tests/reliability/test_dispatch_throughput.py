"""How fast one `mplus dispatch` and then two drain N queued messages (sandbox, receipt delay 0:
each message is one claim share and one transaction), on SQLite and on PostgreSQL. A figure for
docs/reliability.md, not an assertion on speed (the machines are shared and noisy); what is
asserted is that every message was sent once and delivered."""

from __future__ import annotations

import random
from pathlib import Path

from sqlalchemy import Engine

from harness.waiting import wait_until
from server.storage.database import create_database_engine
from tests.support.dispatching import (
    Dispatchers,
    destinations,
    finished,
    outcomes,
    queue,
    wrong,
)
from tests.support.figures import record, scaled
from tests.support.processes import Processes, prepared

MESSAGES = scaled(500, 5000)
DRAINING = {
    "MPLUS_DISPATCH_INTERVAL_MS": "50",
    "MPLUS_SANDBOX_RECEIPT_DELAY_MS": "0",
}
"""Defaults otherwise: claims of 100 under a 30 s lease."""


def drain_rate(processes: Processes, engine: Engine, dispatchers: int, rng: random.Random) -> float:
    """Messages per second `dispatchers` processes take from the first try of MESSAGES queued
    at once to the last one's final state (the database's timestamps: process start-up and
    polling before the first claim are not counted)."""
    running = Dispatchers(processes.cli)
    before = finished(engine)
    try:
        for slot in range(dispatchers):
            running.start(slot)  # all idle and polling before the queue fills
        to = destinations(MESSAGES, ["10"], rng)
        uuids = queue(engine, processes.settings, processes.key, to, None)
        wait_until(lambda: finished(engine) == before + MESSAGES, "the queue to drain", 120)
    finally:
        exits = running.stop()
    assert exits == [0] * dispatchers, running.logs()
    by_uuid = outcomes(engine, uuids)
    problems = [
        p for outcome in by_uuid.values() for p in wrong(outcome, "10", receipts_later=False)
    ]
    assert problems == []
    first = min(at for outcome in by_uuid.values() for at in outcome.accepted_at)
    last = max(outcome.finished_at for outcome in by_uuid.values() if outcome.finished_at)
    return MESSAGES / max((last - first).total_seconds(), 0.001)


def test_one_and_two_dispatchers_drain_the_queue(database_url: str, tmp_path: Path) -> None:
    rng = random.Random()
    processes = prepared(tmp_path, database_url, **DRAINING)
    engine = create_database_engine(database_url, pool_size=2)
    try:
        one = drain_rate(processes, engine, 1, rng)
        two = drain_rate(processes, engine, 2, rng)
    finally:
        engine.dispose()
    database = engine.dialect.name
    figures = {
        "database": database,
        "messages_per_run": MESSAGES,
        "one_dispatcher_msg_per_s": round(one),
        "two_dispatchers_msg_per_s": round(two),
        "two_over_one": round(two / one, 2),
        "sandbox_receipt_delay_ms": 0,
    }
    print(f"\ndrain rate, {database}, {MESSAGES} messages: {figures}")
    record(f"dispatch-throughput-{database}", **figures)
