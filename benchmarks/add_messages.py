"""AddMessages throughput: gRPC direct vs JSON through Envoy, batch sizes, SQLite vs PostgreSQL.

Starts real `mplus serve` and Envoy processes on free loopback ports, drives them for a fixed
time per case and prints requests/s, messages/s and ratios measured in the same run (this
machine is shared and noisy: compare ratios, not absolute numbers across runs).

    .venv/bin/python -m benchmarks.add_messages [--seconds 3] [--clients 8] [--no-postgres]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx
from mplus.v1 import message_pb2, message_service_pb2, message_service_pb2_grpc

from server.config import Settings
from server.processes import stop_process
from server.service import accounts, senders
from server.storage.database import create_database_engine
from server.storage.migrate import upgrade
from server.storage.unit_of_work import UnitOfWork
from tests.e2e.conftest import free_port, start_envoy, wait_for_serving

BATCH_SIZES = (1, 100, 1000)


@contextmanager
def postgres() -> Iterator[str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    with tempfile.TemporaryDirectory() as data:
        server = pgserver.get_server(data, cleanup_mode="stop")  # type: ignore[attr-defined]
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


@contextmanager
def running_stack(database_url: str) -> Iterator[tuple[str, str, str]]:
    """(key, gRPC target, JSON URL) of a migrated database behind a server and Envoy."""
    with tempfile.TemporaryDirectory() as state:
        settings = dataclasses.replace(
            Settings(),
            database_url=database_url,
            state_dir=Path(state),
            grpc_port=free_port(),
            http_port=free_port(),
            envoy_admin_port=free_port(),
            rate_limit_per_key=0,  # one key drives every case: measure the service, not limits
            rate_limit_global=0,
        )
        engine = create_database_engine(database_url)
        upgrade(engine)
        senders.add_senders(lambda: UnitOfWork(engine), [f"4477009004{i:02d}" for i in range(20)])
        key = accounts.create_account(lambda: UnitOfWork(engine), "bench").key
        engine.dispose()
        env = {
            **os.environ,
            "MPLUS_DATABASE_URL": database_url,
            "MPLUS_STATE_DIR": state,
            "MPLUS_GRPC_PORT": str(settings.grpc_port),
            "MPLUS_METRICS_PORT": str(free_port()),
        }
        log = Path(state) / "processes.log"
        with log.open("wb") as sink:
            server = subprocess.Popen(
                [sys.executable, "-m", "server.cli", "serve"], env=env, stdout=sink, stderr=sink
            )
        target = f"127.0.0.1:{settings.grpc_port}"
        try:
            wait_for_serving(target)
            envoy = start_envoy(settings, Path(state) / "envoy.log")
        except BaseException:
            stop_process(server)
            raise
        try:
            yield key, target, f"http://127.0.0.1:{settings.http_port}/message"
        finally:
            stop_process(envoy)
            stop_process(server)


def json_body(size: int, offset: int) -> bytes:
    return json.dumps(
        {
            "defaults": {"from": {"type": "shared"}, "channels": ["rcs", "sms"]},
            "messages": [
                {"to": f"4470{(offset + i) % 50_000:08d}", "body": f"Benchmark message {i}"}
                for i in range(size)
            ],
        }
    ).encode()


def grpc_request(size: int, offset: int, key: str) -> message_service_pb2.AddMessagesRequest:
    defaults = message_pb2.Defaults()
    defaults.channels.extend(["rcs", "sms"])
    getattr(defaults, "from").type = "shared"
    return message_service_pb2.AddMessagesRequest(
        key=key,
        batch=message_service_pb2.MessageBatch(
            defaults=defaults,
            messages=[
                message_pb2.Message(to=f"4470{(offset + i) % 50_000:08d}", body=f"Benchmark {i}")
                for i in range(size)
            ],
        ),
    )


def drive(send: Callable[[int], None], clients: int, seconds: float) -> int:
    """Runs `send` from `clients` threads for `seconds`; returns completed requests."""
    done = [0] * clients
    stop = time.monotonic() + seconds

    def client(index: int) -> None:
        n = 0
        while time.monotonic() < stop:
            send(index * 1_000_000 + n)
            n += 1
        done[index] = n

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(done)


def measure(database: str, url: str, clients: int, seconds: float) -> dict[tuple[str, int], float]:
    results: dict[tuple[str, int], float] = {}
    with running_stack(url) as (key, target, json_url):
        channel = grpc.insecure_channel(target)
        stub = message_service_pb2_grpc.MessageServiceStub(channel)
        http = httpx.Client(timeout=60)
        for size in BATCH_SIZES:
            requests = {n: grpc_request(size, n * size, key) for n in range(32)}
            bodies = {n: json_body(size, n * size) for n in range(32)}

            def via_grpc(n: int, size: int = size, requests: dict = requests) -> None:  # type: ignore[type-arg]
                stub.AddMessages(requests[n % 32], timeout=60)

            def via_json(n: int, bodies: dict = bodies) -> None:  # type: ignore[type-arg]
                response = http.post(json_url, params={"key": key}, content=bodies[n % 32])
                response.raise_for_status()

            for transport, send in (("grpc", via_grpc), ("json", via_json)):
                send(0)  # warm up
                started = time.monotonic()
                count = drive(send, clients, seconds)
                elapsed = time.monotonic() - started
                results[(transport, size)] = count * size / elapsed
                print(
                    f"{database:<10} {transport:<5} batch={size:<5} "
                    f"{count / elapsed:8.1f} req/s {count * size / elapsed:10.0f} msg/s",
                    flush=True,
                )
        http.close()
        channel.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        runs = {
            "sqlite": measure("sqlite", f"sqlite:///{scratch}/bench.db", args.clients, args.seconds)
        }
    if not args.no_postgres:
        with postgres() as url:
            runs["postgres"] = measure("postgres", url, args.clients, args.seconds)
    print("\nratios (same run):")
    for database, results in runs.items():
        print(
            f"{database:<10} bulk gain msg/s batch=1000 vs batch=1: "
            f"grpc {results[('grpc', 1000)] / results[('grpc', 1)]:.1f}x, "
            f"json {results[('json', 1000)] / results[('json', 1)]:.1f}x; "
            f"json/grpc msg/s at batch=1: {results[('json', 1)] / results[('grpc', 1)]:.2f}, "
            f"at batch=1000: {results[('json', 1000)] / results[('grpc', 1000)]:.2f}"
        )
    if "postgres" in runs:
        for transport in ("grpc", "json"):
            for size in BATCH_SIZES:
                ratio = runs["postgres"][(transport, size)] / runs["sqlite"][(transport, size)]
                print(f"postgres/sqlite msg/s {transport} batch={size}: {ratio:.2f}")


if __name__ == "__main__":
    main()
