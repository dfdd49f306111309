"""The unit of work: explicit commit, rollback otherwise, and database failures in our terms."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from server.storage.database import create_database_engine
from server.storage.errors import StorageUnavailable
from server.storage.unit_of_work import UnitOfWork

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def test_work_is_kept_only_when_committed(
    engine: Engine, unit_of_work: Callable[[], UnitOfWork]
) -> None:
    with unit_of_work() as uow:
        uow.senders.add(["447700900301"], NOW)
    with unit_of_work() as uow:
        uow.senders.add(["447700900302"], NOW)
        uow.commit()
    with unit_of_work() as uow:
        assert uow.senders.pool() == ["447700900302"]


def test_an_error_rolls_back_everything_done_in_the_block(
    unit_of_work: Callable[[], UnitOfWork],
) -> None:
    with pytest.raises(RuntimeError), unit_of_work() as uow:
        uow.senders.add(["447700900303"], NOW)
        raise RuntimeError("boom")
    with unit_of_work() as uow:
        assert uow.senders.pool() == []


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("postgresql://mplus@127.0.0.1:1/mplus", id="postgres-refused"),
        pytest.param("sqlite:///{tmp}", id="sqlite-not-a-file"),
    ],
)
def test_an_unreachable_database_is_storage_unavailable(url: str, tmp_path: Path) -> None:
    engine = create_database_engine(url.format(tmp=tmp_path), pool_size=1)
    with pytest.raises(StorageUnavailable), UnitOfWork(engine) as uow:
        uow.senders.pool()
    engine.dispose()
