"""A real stack in one process: a migrated SQLite file or PostgreSQL database, the gRPC
server on port 0, Envoy in front; and what tests do to it (another gateway, a held call)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, select

from harness.envoy import start_envoy
from harness.ports import free_port
from server.api.metrics import Metrics
from server.api.server import GrpcServer, create_server
from server.config import DatabaseTimeouts, Settings
from server.domain.model import AcceptedMessage
from server.processes import stop_process
from server.service import accounts, senders
from server.service.add_messages import AddMessages, AddMessagesCommand
from server.storage.database import create_database_engine, database_answers
from server.storage.migrate import upgrade
from server.storage.tables import queued_messages, sender_pins
from server.storage.unit_of_work import UnitOfWork

POOL = ("447700900201", "447700900202", "447700900203")
LOCK_TIMEOUT_MS = 1000
"""Short, so that a test may wait it out: nothing else in these tests waits for a lock."""


@dataclass
class HeldAddMessages(AddMessages):
    """AddMessages that waits for `release` before it runs: keeps a server's RPC slot busy."""

    entered: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def __call__(
        self,
        command: AddMessagesCommand,
        authenticated: Callable[[str], None] = lambda _account_id: None,
    ) -> list[AcceptedMessage]:
        self.entered.set()
        self.release.wait(timeout=30)
        return super().__call__(command, authenticated)


@dataclass
class Stack:
    settings: Settings
    engine: Engine
    key: str
    account_id: str
    grpc_target: str
    http_url: str
    metrics_url: str
    envoy_log: Path

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self.engine)

    def pin_count(self) -> int:
        with self.engine.connect() as connection:
            query = select(func.count()).select_from(sender_pins)
            return int(connection.execute(query).scalar_one())

    def stored_count(self, **where: Any) -> int:
        query = select(func.count()).select_from(queued_messages)
        for column, value in where.items():
            query = query.where(queued_messages.c[column] == value)
        with self.engine.connect() as connection:
            return int(connection.execute(query).scalar_one())

    def post(
        self, body: Any, params: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        query = {"key": self.key} if params is None else params
        return httpx.post(f"{self.http_url}/message", params=query, json=body, timeout=30, **kwargs)


@contextmanager
def extra_gateway(stack: Stack, **changes: Any) -> Iterator[Settings]:
    """Another Envoy with its own settings in front of the stack's server, so tests of limits
    and TLS leave the shared gateway's defaults alone."""
    settings = dataclasses.replace(
        stack.settings, http_port=free_port(), envoy_admin_port=free_port(), **changes
    )
    envoy = start_envoy(settings, settings.state_dir / f"envoy-{settings.http_port}.log")
    try:
        yield settings
    finally:
        stop_process(envoy)


@contextmanager
def running_stack(
    database_url: str, state: Path, lock_timeout_ms: int = LOCK_TIMEOUT_MS
) -> Iterator[Stack]:
    settings = dataclasses.replace(
        Settings(),
        database_url=database_url,
        state_dir=state,
        http_port=free_port(),
        envoy_admin_port=free_port(),
        metrics_port=free_port(),
        max_request_bytes=1024 * 1024,
        db_timeouts=DatabaseTimeouts(lock_ms=lock_timeout_ms),
    )
    engine = create_database_engine(settings.database_url, timeouts=settings.db_timeouts)
    upgrade(engine)
    unit_of_work = lambda: UnitOfWork(engine)  # noqa: E731
    senders.add_senders(unit_of_work, POOL)
    account = accounts.create_account(unit_of_work, "e2e")
    metrics = Metrics()
    server: GrpcServer = create_server(
        AddMessages(
            lambda: UnitOfWork(engine, metrics.db_transaction_duration.observe), settings.limits
        ),
        "127.0.0.1:0",
        settings,
        metrics,
        database_answers=lambda: database_answers(engine),  # health and GET /readyz follow it
    )
    server.start()
    settings = dataclasses.replace(settings, grpc_port=server.port)  # Envoy's upstream
    envoy_log = state / "envoy.log"
    envoy = start_envoy(settings, envoy_log)
    try:
        yield Stack(
            settings=settings,
            engine=engine,
            key=account.key,
            account_id=account.id,
            grpc_target=f"127.0.0.1:{settings.grpc_port}",
            http_url=f"http://127.0.0.1:{settings.http_port}",
            metrics_url=f"http://127.0.0.1:{settings.metrics_port}/metrics",
            envoy_log=envoy_log,
        )
    finally:
        stop_process(envoy)
        server.stop(grace=1)
        engine.dispose()


SQLITE_ONLY = pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
"""For a test whose requests never reach the database (Envoy's own answers, transport shape,
health, reflection): the database cannot change its outcome, so it runs once."""
POSTGRES_ONLY = pytest.mark.parametrize(
    "stack", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
"""For what only PostgreSQL does (a statement bound per transaction)."""
