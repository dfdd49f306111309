"""PostgreSQL's pool pings a connection only after it sat idle: a connection the server dropped
meanwhile is replaced unseen; one dropped right after use fails one request, not the next."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from server.storage import database
from server.storage.database import create_database_engine
from server.storage.errors import StorageUnavailable
from server.storage.migrate import upgrade
from server.storage.unit_of_work import UnitOfWork

pytestmark = pytest.mark.postgres


def backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def terminate(url: str, pid: int) -> None:
    """Drops one server process, as a restart or an idle timeout on the server would."""
    admin = create_engine(make_url(url).set(drivername="postgresql+psycopg"))
    with admin.connect() as connection:
        assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
    admin.dispose()


def test_a_connection_dropped_while_idle_is_replaced_before_use(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "PING_AFTER_IDLE_S", 0.1)
    engine = create_database_engine(postgres_url, pool_size=1)
    upgrade(engine)
    try:
        first = backend_pid(engine)
        terminate(postgres_url, first)
        time.sleep(0.2)
        with UnitOfWork(engine) as uow:  # no error: the ping found it dead
            assert uow.keys.account_for("no such key") is None
        assert backend_pid(engine) != first
    finally:
        engine.dispose()


def test_a_connection_dropped_right_after_use_fails_one_request_then_the_pool_recovers(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "PING_AFTER_IDLE_S", 60.0)  # however slow `terminate` is
    engine = create_database_engine(postgres_url, pool_size=1)
    upgrade(engine)
    try:
        terminate(postgres_url, backend_pid(engine))
        with pytest.raises(StorageUnavailable), UnitOfWork(engine) as uow:
            uow.keys.account_for("no such key")
        with UnitOfWork(engine) as uow:
            assert uow.keys.account_for("no such key") is None
    finally:
        engine.dispose()
