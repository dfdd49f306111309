"""Two `mplus serve` processes on one PostgreSQL, hammered in parallel: the sticky rule and
idempotent ids hold exactly, and every acknowledged message is stored once."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from mplus.v1 import message_pb2, message_service_pb2, message_service_pb2_grpc
from sqlalchemy import Engine, select

from server.processes import stop_process
from server.service import accounts, senders
from server.storage.database import create_database_engine
from server.storage.migrate import upgrade
from server.storage.tables import queued_messages, sender_pins
from server.storage.unit_of_work import UnitOfWork
from tests.e2e.conftest import free_port, wait_for_serving

pytestmark = pytest.mark.postgres

POOL = [f"4477009003{i:02d}" for i in range(6)]
DESTINATIONS = [f"4470000{i:05d}" for i in range(12)]
CLIENT_IDS = [str(uuid.UUID(int=i + 1, version=4)) for i in range(8)]
THREADS, REQUESTS_PER_THREAD = 8, 12


@pytest.fixture
def replicas(postgres_url: str, tmp_path: Path) -> Iterator[tuple[Engine, str, list[str]]]:
    engine = create_database_engine(postgres_url)
    upgrade(engine)
    senders.add_senders(lambda: UnitOfWork(engine), POOL)
    key = accounts.create_account(lambda: UnitOfWork(engine), "replicated").key
    ports = [free_port(), free_port()]
    processes = []
    for port in ports:
        with (tmp_path / f"server-{port}.log").open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "server.cli", "serve"],
                    env={
                        **os.environ,
                        "MPLUS_DATABASE_URL": postgres_url,
                        "MPLUS_GRPC_PORT": str(port),
                        "MPLUS_METRICS_PORT": "0",
                        "MPLUS_STATE_DIR": str(tmp_path),
                        "MPLUS_MAX_WORKERS": "4",
                    },
                    stdout=log,
                    stderr=log,
                )
            )
    targets = [f"127.0.0.1:{port}" for port in ports]
    try:
        for target in targets:
            wait_for_serving(target)
        yield engine, key, targets
    finally:
        for process in processes:
            stop_process(process)
        engine.dispose()


def shared(to: str, body: str = "hello") -> message_pb2.Message:
    message = message_pb2.Message(to=to, body=body)
    getattr(message, "from").CopyFrom(message_pb2.From(type="shared"))
    return message


def with_id(client_id: str) -> message_pb2.Message:
    """Each id always carries the same content, so every resend is a replay."""
    message = shared(DESTINATIONS[CLIENT_IDS.index(client_id)], body=f"order {client_id}")
    message.id = client_id
    return message


def test_two_processes_agree_on_senders_and_ids_under_parallel_load(
    replicas: tuple[Engine, str, list[str]],
) -> None:
    engine, key, targets = replicas

    def worker(seed: int) -> list[message_pb2.AddedMessage]:
        rng = random.Random(seed)
        added: list[message_pb2.AddedMessage] = []
        channels = [grpc.insecure_channel(target) for target in targets]
        try:
            stubs = [message_service_pb2_grpc.MessageServiceStub(c) for c in channels]
            for n in range(REQUESTS_PER_THREAD):
                batch = [shared(rng.choice(DESTINATIONS)) for _ in range(rng.randint(1, 6))]
                batch += [with_id(i) for i in rng.sample(CLIENT_IDS, rng.randint(0, 3))]
                rng.shuffle(batch)
                response = stubs[(seed + n) % 2].AddMessages(
                    message_service_pb2.AddMessagesRequest(
                        key=key, batch=message_service_pb2.MessageBatch(messages=batch)
                    ),
                    timeout=30,
                )
                assert [m.to for m in response.messages] == [m.to for m in batch]
                added.extend(response.messages)
        finally:
            for channel in channels:
                channel.close()
        return added

    with ThreadPoolExecutor(THREADS) as pool:
        answered = [m for result in pool.map(worker, range(THREADS)) for m in result]

    senders_seen: dict[str, set[str]] = defaultdict(set)
    uuids_by_id: dict[str, set[str]] = defaultdict(set)
    for added in answered:
        senders_seen[added.to].add(getattr(added, "from").value)
        if added.HasField("id"):
            uuids_by_id[added.id].add(added.message_uuid)
    with engine.connect() as connection:
        pins = dict(
            connection.execute(select(sender_pins.c.destination, sender_pins.c.sender)).all()
        )
        stored = connection.execute(
            select(
                queued_messages.c.message_uuid,
                queued_messages.c.client_id,
                queued_messages.c.sender,
                queued_messages.c.destination,
            )
        ).all()

    assert {to: len(s) for to, s in senders_seen.items()} == {to: 1 for to in senders_seen}
    assert pins == {to: s.pop() for to, s in senders_seen.items()}
    assert all(row.sender == pins[row.destination] for row in stored)
    assert {i: len(u) for i, u in uuids_by_id.items()} == {i: 1 for i in uuids_by_id}
    stored_ids = [row.client_id for row in stored if row.client_id is not None]
    assert sorted(stored_ids) == sorted(uuids_by_id)  # each id stored exactly once
    acknowledged = {added.message_uuid for added in answered}
    assert acknowledged == {row.message_uuid for row in stored}  # nothing lost, nothing extra
    assert len(answered) >= THREADS * REQUESTS_PER_THREAD  # every request was answered in full
