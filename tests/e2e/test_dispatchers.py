"""Two dispatchers on one PostgreSQL queue, as an operator runs them: `mplus up` with
MPLUS_DISPATCHERS=2, messages posted through Envoy's JSON `POST /message` with a callback to a
local receiver. Each message is tried exactly as its number dictates, so sent (accepted) at most
once, and its receipt is posted exactly once: no kill here, so no repeat either.

Which dispatcher sent a message is not asserted: the attempts log has no owner column, a claim's
lease token is cleared when the message moves on, and the dispatchers' JSON log lines name
neither the process nor the messages they send (only the receipts they post, without the
process), so the database and `mplus up`'s output cannot tell the two apart."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine

from harness.postgres import fresh_postgres_database
from harness.waiting import wait_until
from server.storage.database import create_database_engine
from tests.support.dispatching import EXPECTED, FAST_DISPATCH, destinations, outcomes, wrong
from tests.support.operator import Cli, make_cli, running_up
from tests.support.webhook_receiver import receiving

MESSAGES = 500
PER_REQUEST = 100


@pytest.fixture
def postgres(postgres_base_url: str) -> Iterator[str]:
    with fresh_postgres_database(postgres_base_url) as url:
        yield url


def post(cli: Cli, key: str, to: list[str], callback: str) -> list[str]:
    """Posts a message to each of `to` through Envoy; the uuids answered, in order."""
    response = httpx.post(
        f"http://127.0.0.1:{cli.http_port}/message",
        params={"key": key},
        json={
            "messages": [{"to": destination} for destination in to],
            "defaults": {
                "from": {"type": "custom", "value": "Acme"},
                "body": "hello",
                "channels": ["rcs", "sms"],
                "callback": callback,
            },
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return [m["messageUuid"] for m in response.json()["messages"]]


def finished(engine: Engine, uuids: list[str]) -> bool:
    final = [o for o in outcomes(engine, uuids).values() if o.status in ("delivered", "failed")]
    return len(final) == len(uuids)


@pytest.mark.postgres
def test_two_dispatchers_send_each_message_once_and_post_each_receipt_once(
    postgres: str, tmp_path: Path
) -> None:
    cli = make_cli(tmp_path, postgres)
    cli.env |= FAST_DISPATCH | {
        "MPLUS_DISPATCHERS": "2",
        "MPLUS_DISPATCH_LEASE_MS": "30000",  # the default's order: no take-over without a fault
        "MPLUS_RATE_LIMIT_PER_KEY": "0",
        "MPLUS_RATE_LIMIT_GLOBAL": "0",
    }
    cli.ok("db", "upgrade")
    account = json.loads(cli.ok("accounts", "create", "customer", "--json"))
    to = destinations(MESSAGES, list(EXPECTED), random.Random())
    engine = create_database_engine(postgres, pool_size=1)
    try:
        with receiving() as receiver, running_up(cli) as up:

            def serving() -> bool:
                assert up.process.poll() is None, up.output()
                dispatching = up.output().count("dispatching with the sandbox driver")
                url = f"http://127.0.0.1:{cli.http_port}/dr-responses"
                return dispatching == 2 and httpx.get(url).is_success

            wait_until(serving, "Envoy to answer and both dispatchers to start", timeout=30)
            uuids: list[str] = []
            for start in range(0, MESSAGES, PER_REQUEST):
                uuids += post(cli, account["key"], to[start : start + PER_REQUEST], receiver.url())
            wait_until(lambda: finished(engine, uuids), "every message to finish", 60)
            wait_until(lambda: len(receiver.posts) >= MESSAGES, "every receipt", 60)
            time.sleep(1)  # a second post of any receipt would arrive by now
            posts = Counter(json.loads(p.body)["messageuuid"] for p in receiver.posts)
            up.process.terminate()
            assert up.process.wait(timeout=30) == 0, up.output()
            output = up.output()
        by_uuid = outcomes(engine, uuids)
    finally:
        engine.dispose()
    assert "Traceback" not in output, output
    problems = {
        uuid: wrong(by_uuid[uuid], destination[-2:])
        for uuid, destination in zip(uuids, to, strict=True)
    }
    assert {uuid: p for uuid, p in problems.items() if p} == {}
    accepted = Counter(len(o.accepted_at) for o in by_uuid.values())
    assert set(accepted) <= {0, 1}, accepted  # 0: refused at once, or never got through
    assert posts == Counter(dict.fromkeys(uuids, 1)), "a receipt missing or posted twice"
    assert Counter(tuple(o.webhooks) for o in by_uuid.values()) == {("delivered",): MESSAGES}
