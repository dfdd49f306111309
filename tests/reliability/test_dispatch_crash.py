"""`kill -9` of `mplus dispatch`, two of them draining one queue, several times at random
moments, on SQLite and on PostgreSQL. A mix of sandbox outcomes (delivered, handset off,
fallback, no channel, retries then delivered, retries run out, spam, opted out), each message
with a callback to a local receiver. Every message then reaches the final state and code its
number dictates through exactly the tries that number takes (a try recorded twice would be a
message sent by two claims; none is recorded after the message was final), has exactly one
receipt row, delivered, and its receipt reached the receiver: at least once, and a second time
only when a kill met its post before its result was recorded (README "Delivery-receipt
webhooks": at least once).

The fast form (`make test`) kills a dispatcher at a moment when none holds a receipt (both
frozen with SIGSTOP while the test looks): a receipt a kill strands waits out its webhook lease
(over a minute, see server.delivery.webhooks.LEASE_MARGIN) before it is posted again, too long
for `make test`. The soak form kills at any moment, and waits for those leases."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from datetime import timedelta
from functools import partial
from math import ceil
from pathlib import Path

from sqlalchemy import Engine

from harness.waiting import wait_until
from server.delivery import webhooks
from server.storage.database import create_database_engine
from tests.support.dispatching import (
    EXPECTED,
    FAST_DISPATCH,
    Dispatchers,
    destinations,
    finished,
    outcomes,
    queue,
    reader,
    receipts_delivered,
    receipts_leased,
    wrong,
)
from tests.support.figures import SOAK, record, scaled
from tests.support.processes import prepared
from tests.support.webhook_receiver import receiving

MESSAGES = scaled(600, 4000)
KILLS = scaled(3, 12)
DISPATCHERS = 2
WEBHOOK_LEASE = (
    timedelta(
        milliseconds=ceil(webhooks.BATCH / webhooks.WORKERS)
        * int(FAST_DISPATCH["MPLUS_WEBHOOK_TIMEOUT_MS"])
    )
    + webhooks.LEASE_MARGIN
)
"""How long a receipt claimed by a killed dispatcher waits before another may post it."""
POSTS_TAKE = timedelta(seconds=2)
"""A claim younger than this may be in hand; an older one still leased was stranded by a kill
(the posts to the local receiver take milliseconds)."""
QUIET_RECEIPTS_WAIT_S = 5.0
"""Fast form: how long a kill waits for a moment when no receipt is in hand, then kills anyway."""


def more_finished(engine: Engine, enough: int) -> bool:
    return finished(engine) >= enough


def in_hand(engine: Engine) -> bool:
    """Whether a living dispatcher may be posting a receipt right now."""
    return bool(receipts_leased(engine, WEBHOOK_LEASE, POSTS_TAKE))


def quiet_moment(engine: Engine, dispatchers: Dispatchers, rng: random.Random) -> None:
    """Fast form: returns with every dispatcher frozen (SIGSTOP) at a moment when none holds
    a receipt it claimed, so that the kill strands none; after QUIET_RECEIPTS_WAIT_S, at
    whatever moment. Frozen, none can claim between this look and the kill."""
    deadline = time.monotonic() + QUIET_RECEIPTS_WAIT_S
    while True:
        dispatchers.freeze(True)
        if not in_hand(engine) or time.monotonic() > deadline:
            return
        dispatchers.freeze(False)
        time.sleep(rng.uniform(0.005, 0.05))


def test_killed_dispatchers_finish_every_message_once_and_every_receipt_arrives(
    database_url: str, tmp_path: Path
) -> None:
    rng = random.Random()
    processes = prepared(tmp_path, database_url, **FAST_DISPATCH)
    engine = reader(database_url)
    dispatchers = Dispatchers(processes.cli)
    kills_with_receipts_leased = 0
    leased_at_kills: set[str] = set()
    try:
        with receiving() as receiver:
            to = destinations(MESSAGES, list(EXPECTED), rng)
            queueing = create_database_engine(database_url, pool_size=1)
            try:
                uuids = queue(queueing, processes.settings, processes.key, to, receiver.url())
            finally:
                queueing.dispose()
            started = time.monotonic()
            for slot in range(DISPATCHERS):
                dispatchers.start(slot)
            try:
                for kill in range(KILLS):
                    # A random moment, spread over the drain: after some more messages finished.
                    enough = min(MESSAGES, (kill + 1) * MESSAGES // (KILLS + 2))
                    wait_until(partial(more_finished, engine, enough), "messages to finish", 60)
                    time.sleep(rng.uniform(0, 0.3))
                    if not SOAK:
                        quiet_moment(engine, dispatchers, rng)
                    slot = rng.randrange(DISPATCHERS)
                    dispatchers.kill(slot)
                    # What the killed one held stays leased: among these (the other one's too).
                    held = receipts_leased(engine, WEBHOOK_LEASE, WEBHOOK_LEASE)
                    dispatchers.freeze(False)
                    kills_with_receipts_leased += bool(held)
                    leased_at_kills |= held
                    dispatchers.start(slot)
                wait_until(lambda: finished(engine) == MESSAGES, "every message to finish", 120)
                drained = time.monotonic() - started
                wait_until(
                    lambda: receipts_delivered(engine) == MESSAGES,
                    "every receipt to be delivered",
                    WEBHOOK_LEASE.total_seconds() + 60,
                )
                receipts_done = time.monotonic() - started
            finally:
                exits = dispatchers.stop()
            posts = Counter(json.loads(post.body)["messageuuid"] for post in receiver.posts)
        by_uuid = outcomes(engine, uuids)
    finally:
        engine.dispose()

    logs = dispatchers.logs()
    assert exits == [0] * DISPATCHERS, logs
    assert '"level": "ERROR"' not in logs and "Traceback" not in logs, logs
    problems = {
        uuid: wrong(by_uuid[uuid], destination[-2:])
        for uuid, destination in zip(uuids, to, strict=True)
    }
    assert {uuid: p for uuid, p in problems.items() if p} == {}
    receipt_rows = Counter(tuple(o.webhooks) for o in by_uuid.values())
    assert receipt_rows == {("delivered",): MESSAGES}, receipt_rows
    missing = set(uuids) - posts.keys()
    assert not missing, f"{len(missing)} receipts never arrived"
    assert posts.keys() == set(uuids), "a receipt for a message not in the test"
    duplicates = sum(count - 1 for count in posts.values())
    # Only a kill repeats a post, of a receipt its sender held: none without a kill.
    repeated = {uuid for uuid, count in posts.items() if count > 1}
    assert repeated <= leased_at_kills, (len(repeated - leased_at_kills), len(leased_at_kills))
    database = engine.dialect.name
    figures = {
        "database": database,
        "dispatchers": DISPATCHERS,
        "messages": MESSAGES,
        "kills": dispatchers.kills,
        "kills_with_receipts_leased": kills_with_receipts_leased,
        "receipts_leased_at_kills": len(leased_at_kills),
        "receipts_posted_twice_or_more": len(repeated),
        "final_states_as_dictated": MESSAGES,
        "outcomes": dict(Counter(o.status for o in by_uuid.values())),
        "delivery_attempts": sum(len(o.tries) for o in by_uuid.values()),
        "accepted_tries": sum(len(o.accepted_at) for o in by_uuid.values()),
        "receipt_rows_delivered": MESSAGES,
        "receipts_posted": sum(posts.values()),
        "duplicate_receipt_posts": duplicates,
        "drained_s": round(drained, 1),
        "receipts_done_s": round(receipts_done, 1),
    }
    print(figures)
    record(f"dispatch-crash-{database}", **figures)
