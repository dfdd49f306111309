"""SQLite writers of several processes (or engines) queue on the writer lock: a waiter goes as
soon as the holder is done, a dead holder frees it, and the wait stays bounded."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from server.config import DatabaseTimeouts
from server.storage.database import create_database_engine
from server.storage.errors import StorageUnavailable
from server.storage.migrate import upgrade
from server.storage.unit_of_work import UnitOfWork
from server.storage.writer_lock import WriterLockTimeout

HOLD_S = 0.38
"""Halfway between two of the times SQLite's own busy handler would look again (0.328 and
0.428 s: naps of 1, 2, 5, 10… ms, then 100 ms each): a waiter that goes within a few ms of
the commit was woken by the writer lock, not by SQLite."""

HOLDER = """
import sys, time
from server.storage.database import create_database_engine
engine = create_database_engine(sys.argv[1])
with engine.begin():
    print("held", flush=True)
    time.sleep(60)
"""


def lock_is_free(url: str) -> bool:
    """Whether another process could take the writer lock now (a probe of our own)."""
    fd = os.open(f"{url.removeprefix('sqlite:///')}-writer.lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # releases the probe's lock, if it got it
    return True


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'mplus.db'}"
    engine = create_database_engine(url)
    upgrade(engine)
    engine.dispose()
    return url


def test_a_waiting_writer_goes_as_soon_as_the_holder_commits(url: str) -> None:
    holder, waiter = create_database_engine(url), create_database_engine(url)
    began_at: list[float] = []

    def write() -> None:
        with UnitOfWork(waiter) as uow:
            began_at.append(time.monotonic())
            uow.messages.by_client_ids("nobody", ["x"])  # a statement inside the transaction
            uow.commit()

    try:
        with UnitOfWork(holder) as uow:
            assert not lock_is_free(url)
            thread = threading.Thread(target=write)
            thread.start()
            time.sleep(HOLD_S)
            assert not began_at, "the second writer began while the first held the lock"
            uow.commit()
            committed_at = time.monotonic()
        thread.join(timeout=10)
        assert began_at and began_at[0] >= committed_at
        assert began_at[0] - committed_at < 0.03  # the lock's naps are 1 ms at most
        assert lock_is_free(url)  # both returned their connection: released
    finally:
        holder.dispose()
        waiter.dispose()


def test_a_holder_killed_mid_transaction_frees_the_lock(url: str) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, url], stdout=subprocess.PIPE, env=os.environ.copy()
    )
    engine = create_database_engine(url, timeouts=DatabaseTimeouts(lock_ms=200))
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        assert not lock_is_free(url)
        with (
            pytest.raises(StorageUnavailable, match="a lock was not granted in time") as refused,
            UnitOfWork(engine),
        ):
            pass
        cause = refused.value.__cause__
        assert isinstance(cause, DBAPIError) and isinstance(cause.orig, WriterLockTimeout)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        assert lock_is_free(url)
        with UnitOfWork(engine) as uow:  # the kernel dropped the dead process's lock
            uow.commit()
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA integrity_check")).scalar() == "ok"
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
        engine.dispose()
