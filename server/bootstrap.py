"""The composition root: engines, units of work, metrics and use cases are built here, and only
here, for `mplus serve`, `mplus dispatch` and the CLI's one-shot commands.

As in cosmicpython's bootstrap.py, the entry points ask for what they run and keep only their
own life cycle (signals, threads, listeners); what differs between them (pool sizes, the
health probe's engine, group commit per dialect) is said once, side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine

from server.api.metrics import Metrics
from server.config import DatabaseTimeouts, Settings
from server.delivery.dispatcher import Dispatcher
from server.delivery.drivers import driver_for, inbound_rounds
from server.delivery.metrics import DeliveryMetrics
from server.delivery.receipts import ReceiptIntake
from server.delivery.webhooks import WebhookSender
from server.service.add_messages import AddMessages
from server.service.clock import Environment
from server.service.group_commit import GroupCommit
from server.storage.bulk_insert import COPY_FROM_ROWS
from server.storage.database import create_database_engine, database_answers
from server.storage.migrate import ensure_current
from server.storage.unit_of_work import UnitOfWork

DISPATCHER_POOL_SIZE = 4
"""Connections of one `mplus dispatch` process (a server's: MPLUS_DB_POOL_SIZE)."""
CLI_POOL_SIZE = 2
"""Connections of one CLI command."""
POSTGRES_GROUPED_AT_MOST = COPY_FROM_ROWS - 1
"""Messages in a request that PostgreSQL runs in a group commit: a request stored by COPY
amortises its own transaction."""

UnitsOfWork = Callable[[], UnitOfWork]


def current_engine(settings: Settings, pool_size: int) -> Engine:
    """An engine on a schema this code was written for: DatabaseUnreachable or SchemaOutOfDate
    otherwise, before anything starts."""
    engine = create_database_engine(
        settings.database_url, pool_size=pool_size, timeouts=settings.db_timeouts
    )
    ensure_current(engine)
    return engine


def units_of_work(
    engine: Engine, on_finish: Callable[[float], None] = lambda _seconds: None
) -> UnitsOfWork:
    """A fresh UnitOfWork per call, each transaction's seconds told to `on_finish`."""
    return lambda: UnitOfWork(engine, on_finish)


def for_cli(settings: Settings) -> UnitsOfWork:
    """A one-shot command's transactions: a small pool, the schema checked first."""
    return units_of_work(current_engine(settings, CLI_POOL_SIZE))


def migration_engine(settings: Settings) -> Engine:
    """`mplus db upgrade`'s engine: the one that may find the schema behind."""
    return create_database_engine(settings.database_url, pool_size=1, timeouts=settings.db_timeouts)


@dataclass(frozen=True)
class ServerParts:
    """What `mplus serve` runs: its use cases, its metrics and its two engines."""

    engine: Engine
    probe_engine: Engine
    """The health probe's own connection: a pool busy with requests is no outage."""
    metrics: Metrics
    add_messages: AddMessages
    receipts: ReceiptIntake
    """The http driver's gateway's receipts (CarrierService)."""

    def database_answers(self) -> bool:
        return database_answers(self.probe_engine)

    def dispose(self) -> None:
        self.engine.dispose()
        self.probe_engine.dispose()


def for_server(settings: Settings) -> ServerParts:
    engine = current_engine(settings, settings.db_pool_size)
    metrics = Metrics()
    unit_of_work = units_of_work(engine, metrics.db_transaction_duration.observe)
    # SQLite's writers take turns on its one write lock anyway: grouping them all turns many
    # commits (fsyncs) into one. PostgreSQL's run side by side in its own processes: small
    # requests share their round trips (BEGIN, the key, COMMIT) in groups, larger ones run
    # side by side (grouped, 1-message requests at concurrency 32 went 55 % faster, 100-message
    # ones 21 % slower).
    add_messages = AddMessages(
        unit_of_work,
        limits=settings.limits,
        group_commit=GroupCommit(unit_of_work),
        grouped_at_most=None if engine.dialect.name == "sqlite" else POSTGRES_GROUPED_AT_MOST,
    )
    receipts = ReceiptIntake(unit_of_work, recorder=metrics.receipts)
    return ServerParts(engine, _probe_engine(settings), metrics, add_messages, receipts)


def _probe_engine(settings: Settings) -> Engine:
    """A probe waits a second at most (a PostgreSQL connect attempt, up to its 5 s)."""
    bound_ms = max(1, min(settings.db_health_interval_ms, 1000))
    return create_database_engine(
        settings.database_url,
        pool_size=1,
        timeouts=DatabaseTimeouts(pool_ms=bound_ms, lock_ms=bound_ms, statement_ms=bound_ms),
    )


@dataclass(frozen=True)
class DispatcherParts:
    """What `mplus dispatch` runs: the dispatcher and the webhook sender on one engine, both
    recording to one DeliveryMetrics."""

    engine: Engine
    unit_of_work: UnitsOfWork
    metrics: DeliveryMetrics
    environment: Environment
    dispatcher: Dispatcher
    webhooks: WebhookSender
    inbound: dict[str, Callable[[], int]]
    """The driver's inbound side's work in this process, by name (server.delivery.drivers)."""


def for_dispatcher(settings: Settings, stopping: Callable[[], bool]) -> DispatcherParts:
    """`stopping` tells the dispatcher to finish the sends in hand and claim no more."""
    engine = current_engine(settings, DISPATCHER_POOL_SIZE)
    metrics = DeliveryMetrics()
    unit_of_work = units_of_work(engine, metrics.db_transaction_duration.observe)
    environment = Environment()
    delivery = settings.delivery
    dispatcher = Dispatcher(
        unit_of_work,
        driver_for(delivery),
        delivery,
        environment,
        recorder=metrics,
        stopping=stopping,
    )
    sender = WebhookSender(unit_of_work, delivery, settings.limits, recorder=metrics)
    intake = ReceiptIntake(unit_of_work, environment, recorder=metrics)
    inbound = inbound_rounds(delivery, intake)
    return DispatcherParts(engine, unit_of_work, metrics, environment, dispatcher, sender, inbound)
