"""The health probe's question: it answers while a writer holds the lock (busy is not down),
says no when the database is gone, and takes no lock of its own."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Engine

from server.config import DatabaseTimeouts
from server.storage.database import create_database_engine, database_answers
from server.storage.unit_of_work import UnitOfWork


def test_a_database_busy_with_a_writer_still_answers(engine: Engine, database_url: str) -> None:
    probe = create_database_engine(
        database_url, pool_size=1, timeouts=DatabaseTimeouts(lock_ms=200)
    )
    try:
        with UnitOfWork(engine) as uow:
            uow.senders.pool()  # the transaction is open: on SQLite, the write lock is held
            assert database_answers(probe)
        with UnitOfWork(engine) as uow:  # and the probe left no lock behind
            uow.senders.pool()
    finally:
        probe.dispose()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("postgresql://mplus@127.0.0.1:1/mplus", id="postgres-refused"),
        pytest.param("sqlite:///{tmp}", id="sqlite-not-a-file"),
    ],
)
def test_an_unreachable_database_does_not_answer(url: str, tmp_path: Path) -> None:
    probe = create_database_engine(url.format(tmp=tmp_path), pool_size=1)
    try:
        assert not database_answers(probe)
    finally:
        probe.dispose()
