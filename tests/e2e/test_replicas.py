"""`mplus up --workers 2` on one PostgreSQL, driven through Envoy as clients drive it: the
sticky rule and idempotent ids hold exactly across processes, and a worker stopped (SIGTERM)
under load drains away without one client seeing an error or one message being lost."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.protobuf import json_format
from mplus.v1 import message_service_pb2, message_service_pb2_grpc
from sqlalchemy import Engine, select

from harness.waiting import wait_until
from server.config import Settings
from server.storage.database import create_database_engine
from server.storage.tables import queued_messages, sender_pins
from tests.support.figures import record
from tests.support.operator import (
    Cli,
    Up,
    balanced_over_workers,
    envoy_host_stats,
    make_cli,
    running_up,
)

pytestmark = pytest.mark.postgres

POOL = [f"4477009003{i:02d}" for i in range(6)]
DESTINATIONS = [f"4470000{i:05d}" for i in range(12)]
CLIENT_IDS = [str(uuid.UUID(int=i + 1, version=4)) for i in range(8)]
THREADS, REQUESTS_PER_THREAD = 8, 12
STARTED = re.compile(r"started worker (\d+) \(gRPC :\d+\) \(pid (\d+)\)")


@dataclass
class Replicas:
    cli: Cli
    up: Up
    accounts: list[tuple[str, str]]
    """(account id, key) of two accounts sharing the pool and the destinations."""
    engine: Engine

    @property
    def key(self) -> str:
        return self.accounts[0][1]

    @property
    def admin(self) -> str:
        return f"http://127.0.0.1:{self.cli.admin_port}"

    def worker_pids(self) -> dict[int, list[int]]:
        """Worker number → every pid it has had, oldest first (restarts append)."""
        pids: dict[int, list[int]] = defaultdict(list)
        for worker, pid in STARTED.findall(self.up.output()):
            pids[int(worker)].append(int(pid))
        return pids

    def host_stats(self, stat: str) -> dict[str, str]:
        return envoy_host_stats(self.cli, stat)

    def both_serve(self) -> bool:
        return balanced_over_workers(self.cli, self.key)

    def stored(self) -> list[Any]:
        with self.engine.connect() as connection:
            return list(
                connection.execute(
                    select(
                        queued_messages.c.account_id,
                        queued_messages.c.message_uuid,
                        queued_messages.c.client_id,
                        queued_messages.c.sender,
                        queued_messages.c.destination,
                    )
                ).all()
            )


@pytest.fixture
def replicas(postgres_url: str, tmp_path: Path) -> Iterator[Replicas]:
    cli = make_cli(tmp_path, postgres_url, workers=2)
    cli.env |= {
        "MPLUS_MAX_WORKERS": "4",
        "MPLUS_METRICS_PORT": "0",  # workers would take +0 and +1: ports not handed out
        "MPLUS_RATE_LIMIT_PER_KEY": "0",  # one key drives all the load here
        "MPLUS_RATE_LIMIT_GLOBAL": "0",
    }
    cli.ok("db", "upgrade")
    cli.ok("senders", "add", *POOL)
    created = [json.loads(cli.ok("accounts", "create", name, "--json")) for name in ("a", "b")]
    engine = create_database_engine(postgres_url, pool_size=2)
    try:
        with running_up(cli, "--workers", "2") as up:
            replicas = Replicas(cli, up, [(a["id"], a["key"]) for a in created], engine)
            wait_until(replicas.both_serve, "Envoy to balance over both workers", timeout=30)
            yield replicas
    finally:
        engine.dispose()


def shared(to: str, body: str = "hello", client_id: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {"from": {"type": "shared"}, "to": to, "body": body}
    if client_id is not None:
        message["id"] = client_id
    return message


def with_id(client_id: str) -> dict[str, Any]:
    """Each id always carries the same content, so every resend is a replay."""
    return shared(DESTINATIONS[CLIENT_IDS.index(client_id)], f"order {client_id}", client_id)


def send_json(
    replicas: Replicas, client: httpx.Client, batch: list[dict[str, Any]], key: str = ""
) -> Any:
    response = client.post(
        f"http://127.0.0.1:{replicas.cli.http_port}/message",
        params={"key": key or replicas.key},
        json={"messages": batch},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()["messages"]


def send_grpc(stub: message_service_pb2_grpc.MessageServiceStub, batch: list[Any], key: str) -> Any:
    """Native gRPC through Envoy's port, answered in the JSON shape for comparison."""
    request = message_service_pb2.AddMessagesRequest()
    json_format.ParseDict({"batch": {"messages": batch}}, request)
    response = stub.AddMessages(request, metadata=[("x-api-key", key)], timeout=30)
    return json_format.MessageToDict(response)["messages"]


def test_two_workers_behind_envoy_agree_on_senders_and_ids_under_parallel_load(
    replicas: Replicas,
) -> None:
    def client(seed: int) -> list[tuple[str, Any]]:
        """(account id, answer) of every message this client sent, as one of two accounts."""
        rng = random.Random(seed)
        account_id, key = replicas.accounts[seed % 2]
        added: list[tuple[str, Any]] = []
        with (
            httpx.Client() as http,
            grpc.insecure_channel(f"127.0.0.1:{replicas.cli.http_port}") as channel,
        ):
            stub = message_service_pb2_grpc.MessageServiceStub(channel)
            for n in range(REQUESTS_PER_THREAD):
                batch = [shared(rng.choice(DESTINATIONS)) for _ in range(rng.randint(1, 6))]
                batch += [with_id(i) for i in rng.sample(CLIENT_IDS, rng.randint(0, 3))]
                rng.shuffle(batch)
                if (seed // 2 + n) % 2:
                    answered = send_json(replicas, http, batch, key)
                else:
                    answered = send_grpc(stub, batch, key)
                assert [m["to"] for m in answered] == [m["to"] for m in batch]
                added.extend((account_id, m) for m in answered)
        return added

    with ThreadPoolExecutor(THREADS) as pool:
        answered = [m for result in pool.map(client, range(THREADS)) for m in result]

    served = replicas.host_stats("rq_success")  # the fixture's dry runs count too: 8 or more each
    assert len(served) == 2 and all(int(count) > 20 for count in served.values()), served

    senders_seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    uuids_by_id: dict[tuple[str, str], set[str]] = defaultdict(set)
    for account_id, added in answered:
        senders_seen[account_id, added["to"]].add(added["from"]["value"])
        if "id" in added:
            uuids_by_id[account_id, added["id"]].add(added["messageUuid"])
    stored = replicas.stored()
    with replicas.engine.connect() as connection:
        pins = {
            (row.account_id, row.destination): row.sender
            for row in connection.execute(select(sender_pins)).all()
        }

    # one sender per (account, number), the same one every process answered and stored
    assert {k: len(s) for k, s in senders_seen.items()} == {k: 1 for k in senders_seen}
    assert pins == {k: s.pop() for k, s in senders_seen.items()}
    assert all(row.sender == pins[row.account_id, row.destination] for row in stored)
    assert {account for account, _ in pins} == {account for account, _ in replicas.accounts}
    # each (account, id) answered with one uuid and stored exactly once
    assert {i: len(u) for i, u in uuids_by_id.items()} == {i: 1 for i in uuids_by_id}
    stored_ids = [(row.account_id, row.client_id) for row in stored if row.client_id]
    assert sorted(stored_ids) == sorted(uuids_by_id)
    acknowledged = {added["messageUuid"] for _, added in answered}
    assert acknowledged == {str(row.message_uuid) for row in stored}  # nothing lost or extra
    assert len(answered) >= THREADS * REQUESTS_PER_THREAD  # every request was answered in full


def test_a_worker_stopped_under_load_drains_without_a_client_error_or_a_lost_message(
    replicas: Replicas,
) -> None:
    """Clients post messages with ids while worker 1 gets SIGTERM: it goes NOT_SERVING,
    Envoy routes around it, it finishes what it has and exits 0; `mplus up` starts it again."""
    [first_pid] = replicas.worker_pids()[1]
    stop_sending = threading.Event()
    acknowledged: dict[str, str] = {}  # client id → message uuid
    failures: list[str] = []

    def client(seed: int) -> None:
        with httpx.Client() as http:
            while not stop_sending.is_set():
                client_id = str(uuid.uuid4())
                batch = [shared(DESTINATIONS[seed], f"drain {client_id}", client_id)]
                try:
                    [added] = send_json(replicas, http, batch)
                except (AssertionError, httpx.HTTPError) as error:
                    failures.append(f"{client_id}: {error}")
                    continue
                acknowledged[client_id] = added["messageUuid"]

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(acknowledged) >= 50, "clients to get going")
        signalled = time.monotonic()
        os.kill(first_pid, signal.SIGTERM)
        wait_until(lambda: len(replicas.worker_pids()[1]) == 2, "worker 1 to be restarted", 30)
        restarted_after = time.monotonic() - signalled
        wait_until(replicas.both_serve, "Envoy to balance over the restarted worker", 30)
        during = len(acknowledged)
        wait_until(lambda: len(acknowledged) > during + 50, "clients to go on after it")
    finally:
        stop_sending.set()
        for thread in threads:
            thread.join(timeout=60)

    output = replicas.up.output()
    assert "worker 1 (gRPC" in output and "exited with 0; restarting it" in output, output
    defaults = Settings()
    settings_bound = (defaults.shutdown_drain_ms + defaults.shutdown_grace_ms) / 1000 + 5
    assert restarted_after < settings_bound
    stored = replicas.stored()
    record(
        "worker_sigterm_under_load",
        acknowledged=len(acknowledged),
        failed_requests=len(failures),
        stored=len(stored),
        restarted_after_s=round(restarted_after, 2),
    )
    assert failures == []
    assert {row.client_id: str(row.message_uuid) for row in stored} == acknowledged
    assert len(stored) == len(acknowledged)  # no message stored twice, none unacknowledged


def test_mplus_up_stopped_under_load_answers_what_it_took_and_loses_nothing(
    replicas: Replicas,
) -> None:
    """SIGTERM to `mplus up` while clients post: Envoy stops taking connections and answers
    what it took, then the workers finish. Every answer is a 200; the rest could not connect
    (or lost the connection unanswered) and may resend with the same ids."""
    stop_sending = threading.Event()
    acknowledged: dict[str, str] = {}
    unanswered: dict[str, str] = {}  # client id → what the client saw instead of an answer
    answers_not_200: list[str] = []

    def client(seed: int) -> None:
        with httpx.Client() as http:
            while not stop_sending.is_set():
                client_id = str(uuid.uuid4())
                batch = [shared(DESTINATIONS[seed], f"stop {client_id}", client_id)]
                try:
                    response = http.post(
                        f"http://127.0.0.1:{replicas.cli.http_port}/message",
                        params={"key": replicas.key},
                        json={"messages": batch},
                        timeout=30,
                    )
                except httpx.TransportError as error:
                    unanswered[client_id] = type(error).__name__
                    time.sleep(0.05)
                    continue
                if response.status_code != 200:
                    answers_not_200.append(response.text)
                    continue
                acknowledged[client_id] = response.json()["messages"][0]["messageUuid"]

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: len(acknowledged) >= 50, "clients to get going")
        signalled = time.monotonic()
        replicas.up.process.send_signal(signal.SIGTERM)
        code = replicas.up.process.wait(timeout=30)
        took = time.monotonic() - signalled
    finally:
        stop_sending.set()
        for thread in threads:
            thread.join(timeout=60)

    stored = {row.client_id: str(row.message_uuid) for row in replicas.stored()}
    record(
        "up_sigterm_under_load",
        acknowledged=len(acknowledged),
        unanswered=len(unanswered),
        unanswered_but_stored=len(set(unanswered) & set(stored)),
        answers_not_200=len(answers_not_200),
        stopped_after_s=round(took, 2),
    )
    assert code == 0, replicas.up.output()
    assert took < Settings().shutdown_grace_ms / 1000  # nothing in flight outlives its grace
    assert answers_not_200 == []
    assert unanswered, "clients kept getting answers after the stop"
    assert {i: stored.get(i) for i in acknowledged} == acknowledged  # every answer is stored
    assert set(stored) <= set(acknowledged) | set(unanswered)  # nothing from nowhere
    assert "Traceback" not in replicas.up.output()
