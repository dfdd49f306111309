"""`kill -9` under load, of the gRPC server and (separately) of Envoy, several times at random
moments, on SQLite and on PostgreSQL. Clients resend every request that got no answer (or a
5xx) with the same ids until it is answered, as the contract tells them to. Every
acknowledged message is then stored exactly once with the uuid it was answered with, a
resend never makes a second row, and the database passes its integrity checks."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import httpx
from mplus.v1 import message_service_pb2_grpc
from sqlalchemy import Engine, text

from harness.waiting import wait_until
from server.storage.database import create_database_engine
from tests.support.figures import record, scaled
from tests.support.processes import CHANNEL_OPTIONS, Processes, prepared, running, send_grpc

CLIENTS = 4
"""Half send JSON through Envoy, half native gRPC through Envoy's port (x-api-key)."""
SERVER_KILLS, ENVOY_KILLS = scaled(3, 12), scaled(2, 6)
ACKS_BETWEEN_KILLS = scaled(15, 60)
"""Acknowledged messages between two kills: each kill lands on a service that has recovered."""
ANSWER_WITHIN_S = 60.0
"""A resent request must be answered within this, however many kills it meets."""
DESTINATIONS = [f"4470001{i:05d}" for i in range(20)]
RETRIED_GRPC_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.INTERNAL,  # a stream reset by a dying Envoy
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
}


def with_id(client_id: str, rng: random.Random) -> dict[str, Any]:
    """A message whose id always comes with the same content: each resend is a replay."""
    return {
        "from": {"type": "shared"},
        "to": rng.choice(DESTINATIONS),
        "body": f"crash {client_id}",
        "id": client_id,
    }


@dataclass
class Ledger:
    """What the clients were told, shared by their threads."""

    acknowledged: dict[str, str] = field(default_factory=dict)
    """client id → the message uuid its answer gave."""
    batches: list[list[dict[str, Any]]] = field(default_factory=list)
    requests: int = 0
    retries: int = 0
    retried_ids: set[str] = field(default_factory=set)
    failures: Counter[str] = field(default_factory=Counter)
    refused: list[str] = field(default_factory=list)
    """4xx answers: never expected, each one is a bug."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self) -> int:
        with self.lock:
            return len(self.acknowledged)


def send_until_answered(
    attempt: Callable[[list[dict[str, Any]], Ledger], list[dict[str, Any]] | None],
    batch: list[dict[str, Any]],
    ledger: Ledger,
) -> list[dict[str, Any]]:
    """The same batch, the same ids, until an answer; `attempt` gives None when unanswered."""
    deadline = time.monotonic() + ANSWER_WITHIN_S
    first = True
    while True:
        with ledger.lock:
            ledger.requests += 1
            if not first:
                ledger.retries += 1
                ledger.retried_ids.update(m["id"] for m in batch)
        answered = attempt(batch, ledger)
        if answered is not None:
            return answered
        first = False
        assert time.monotonic() < deadline, f"no answer in {ANSWER_WITHIN_S} s"
        time.sleep(0.05)  # resend at once, but not in a spin while a process restarts


def json_attempt(
    processes: Processes, http: httpx.Client, batch: list[dict[str, Any]], ledger: Ledger
) -> list[dict[str, Any]] | None:
    try:
        response = http.post(
            f"{processes.http_url}/message",
            params={"key": processes.key},
            json={"messages": batch},
        )
    except httpx.HTTPError as error:
        ledger.failures[f"json {type(error).__name__}"] += 1
        return None
    if response.status_code >= 500:
        ledger.failures[f"json {response.status_code}"] += 1
        return None
    if response.status_code != 200:
        ledger.refused.append(f"{response.status_code} {response.text}")
        raise AssertionError(response.text)
    messages: list[dict[str, Any]] = response.json()["messages"]
    return messages


def grpc_attempt(
    processes: Processes,
    stub: message_service_pb2_grpc.MessageServiceStub,
    batch: list[dict[str, Any]],
    ledger: Ledger,
) -> list[dict[str, Any]] | None:
    try:
        return send_grpc(stub, batch, processes.key)
    except grpc.RpcError as error:
        code = error.code()
        if code in RETRIED_GRPC_CODES:
            ledger.failures[f"grpc {code.name}"] += 1
            return None
        ledger.refused.append(f"{code.name} {error.details()}")
        raise


def client(processes: Processes, seed: int, ledger: Ledger, stop: threading.Event) -> None:
    rng = random.Random(seed)
    with (
        httpx.Client(timeout=15) as http,
        grpc.insecure_channel(f"127.0.0.1:{processes.cli.http_port}", CHANNEL_OPTIONS) as channel,
    ):
        stub = message_service_pb2_grpc.MessageServiceStub(channel)
        attempt = (
            partial(grpc_attempt, processes, stub)
            if seed % 2
            else partial(json_attempt, processes, http)
        )
        while not stop.is_set():
            batch = [with_id(str(uuid.uuid4()), rng) for _ in range(rng.randint(1, 3))]
            answered = send_until_answered(attempt, batch, ledger)
            assert [m["id"] for m in answered] == [m["id"] for m in batch]
            with ledger.lock:
                ledger.batches.append(batch)
                for message in answered:
                    assert message["id"] not in ledger.acknowledged, "an id answered twice"
                    ledger.acknowledged[message["id"]] = message["messageUuid"]


def more_acknowledged(ledger: Ledger, errors: list[BaseException]) -> None:
    """Waits for ACKS_BETWEEN_KILLS more acknowledgements: the service has recovered."""
    enough = ledger.count() + ACKS_BETWEEN_KILLS
    wait_until(lambda: ledger.count() >= enough or bool(errors), "more acknowledgements", 60)
    assert not errors, errors


def integrity_problems(engine: Engine) -> list[str]:
    """What the database's own checks find wrong, and duplicates by SQL: nothing, if sound."""
    problems: list[str] = []
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            checked = connection.exec_driver_sql("PRAGMA integrity_check").scalars().all()
            if checked != ["ok"]:
                problems += checked
            problems += map(str, connection.exec_driver_sql("PRAGMA foreign_key_check").all())
        else:
            unchecked = connection.execute(
                text(
                    "SELECT conname FROM pg_constraint "
                    "WHERE conrelid = 'queued_messages'::regclass AND NOT convalidated"
                )
            ).all()
            problems += [f"constraint not validated: {row[0]}" for row in unchecked]
            kinds = connection.execute(
                text(
                    "SELECT contype FROM pg_constraint WHERE conrelid = 'queued_messages'::regclass"
                )
            ).scalars()
            if not {"p", "u", "f"} <= set(kinds):
                problems.append("queued_messages lacks its primary, unique or foreign key")
        orphans = connection.execute(
            text(
                "SELECT count(*) FROM queued_messages q "
                "LEFT JOIN accounts a ON a.id = q.account_id WHERE a.id IS NULL"
            )
        ).scalar_one()
        if orphans:
            problems.append(f"{orphans} messages of no account")
        duplicates = connection.execute(
            text(
                "SELECT account_id, client_id, count(*) FROM queued_messages "
                "WHERE client_id IS NOT NULL GROUP BY account_id, client_id HAVING count(*) > 1"
            )
        ).all()
        problems += [f"duplicate id: {row}" for row in duplicates]
    return problems


def stored_ids(engine: Engine, account_id: str) -> dict[str, str]:
    """client id → message uuid of every stored message of the account."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT client_id, message_uuid FROM queued_messages WHERE account_id = :a"),
            {"a": account_id},
        ).all()
    stored = {str(row[0]): str(row[1]) for row in rows}
    assert len(stored) == len(rows), "a client id stored twice"
    return stored


def test_acknowledged_messages_survive_kill_9_of_server_and_envoy_exactly_once(
    database_url: str, tmp_path: Path
) -> None:
    processes = prepared(tmp_path, database_url)
    ledger, stop = Ledger(), threading.Event()
    rng = random.Random()
    kills = ["server"] * SERVER_KILLS + ["envoy"] * ENVOY_KILLS
    rng.shuffle(kills)
    errors: list[BaseException] = []

    def run_client(seed: int) -> None:
        try:
            client(processes, seed, ledger, stop)
        except BaseException as error:
            errors.append(error)
            raise

    with running(processes):
        clients = [threading.Thread(target=run_client, args=(n,)) for n in range(CLIENTS)]
        for thread in clients:
            thread.start()
        try:
            for victim in kills:
                more_acknowledged(ledger, errors)
                time.sleep(rng.uniform(0, 0.5))  # a random moment in the load, not a wait
                processes.kill(victim)
                if victim == "server":
                    processes.start_server()
                else:
                    processes.start_envoy()
            more_acknowledged(ledger, errors)
        finally:
            stop.set()
            for thread in clients:
                thread.join(timeout=ANSWER_WITHIN_S + 15)
        assert not errors, errors
        assert not ledger.refused, ledger.refused

        # Resent after the fact, acknowledged batches replay: the same uuids, no new row.
        with httpx.Client(timeout=15) as http:
            for batch in rng.sample(ledger.batches, min(20, len(ledger.batches))):
                answered = json_attempt(processes, http, batch, ledger)
                assert answered is not None
                assert {m["id"]: m["messageUuid"] for m in answered} == {
                    m["id"]: ledger.acknowledged[m["id"]] for m in batch
                }

    engine = create_database_engine(database_url, pool_size=1)
    try:
        stored = stored_ids(engine, processes.account_id)
        problems = integrity_problems(engine)
    finally:
        engine.dispose()
    assert problems == []
    lost = ledger.acknowledged.keys() - stored.keys()
    extra = stored.keys() - ledger.acknowledged.keys()
    assert not lost and not extra, (len(lost), len(extra))
    assert stored == ledger.acknowledged  # each with the uuid its answer gave, resent or not
    assert ledger.retried_ids, "no kill met a request in flight"
    record(
        f"crash-{engine.dialect.name}",
        database=engine.dialect.name,
        requests=ledger.requests,
        server_kills=SERVER_KILLS,
        envoy_kills=ENVOY_KILLS,
        acknowledged=len(ledger.acknowledged),
        stored=len(stored),
        retries=ledger.retries,
        retried_ids=len(ledger.retried_ids),
        unanswered_by_kind=dict(ledger.failures),
        duplicates=0,
        replayed_batches=min(20, len(ledger.batches)),
    )
