"""The storage ceilings: each bare driver inserting message-shaped rows into a fresh, migrated
database in 1000-row transactions: sqlite3 `executemany` (WAL, synchronous=FULL) and
psycopg `COPY` (PostgreSQL's defaults, fsync on commit)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from server.service import accounts
from server.storage.database import create_database_engine
from server.storage.migrate import upgrade
from server.storage.unit_of_work import UnitOfWork

ROWS_PER_TRANSACTION = 1000
COLUMNS = (
    "message_uuid, batch_uuid, account_id, client_id, submitted_id, fingerprint, destination, "
    "sender_type, sender, body, callback, channels, channels_given, send_at, due_at, scheduled, "
    "status, created_at"
)
INSERT = f"INSERT INTO queued_messages ({COLUMNS}) VALUES ({', '.join('?' * 18)})"
COPY = f"COPY queued_messages ({COLUMNS}) FROM STDIN"
CHANNELS = json.dumps(["rcs", "sms"])

Row = tuple[object, ...]


def _batch(account_id: str, now: object, false: object) -> list[Row]:
    """The rows of one 1000-message request, as mplus stores them (`now` and `false` in the
    driver's own form: text and 0 for sqlite3, a datetime and False for psycopg)."""
    batch_uuid = str(uuid.uuid4())
    rows: list[Row] = []
    for i in range(ROWS_PER_TRANSACTION):
        to, body = f"4470{i:08d}", f"Benchmark message {i}"
        fingerprint = hashlib.sha256(f"{to}\0{body}".encode()).hexdigest()
        rows.append(
            (
                str(uuid.uuid4()), batch_uuid, account_id, None, None, fingerprint, to,
                "shared", "447700900400", body, None, CHANNELS, false, None, now, false,
                "queued", now,
            )
        )  # fmt: skip
    return rows


def _migrated(url: str) -> str:
    """Migrates the fresh database at `url` and returns the id of an account made in it."""
    engine = create_database_engine(url)
    try:
        upgrade(engine)
        return accounts.create_account(lambda: UnitOfWork(engine), "driver").id
    finally:
        engine.dispose()


def _timed(
    insert_batch: Callable[[list[Row]], None], rows: Callable[[], list[Row]], seconds: float
) -> float:
    """Rows/s of `insert_batch` for about `seconds`; only the driver's time counts (the rows
    are built outside it)."""
    inserted, spent = 0, 0.0
    while spent < seconds:
        batch = rows()
        started = time.perf_counter()
        insert_batch(batch)
        spent += time.perf_counter() - started
        inserted += len(batch)
    return inserted / spent


def sqlite_rows_per_s(directory: Path, seconds: float) -> float:
    """sqlite3 `executemany` into a fresh database in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "driver.db"
    account_id = _migrated(f"sqlite:///{path}")
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")

        def insert(batch: list[Row]) -> None:
            connection.execute("BEGIN")
            connection.executemany(INSERT, batch)
            connection.execute("COMMIT")

        return _timed(insert, lambda: _batch(account_id, now, 0), seconds)
    finally:
        connection.close()


def postgres_rows_per_s(url: str, seconds: float) -> float:
    """psycopg `COPY` into the fresh PostgreSQL database at `url`."""
    account_id = _migrated(url)
    now = datetime.now(UTC)
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as connection:

        def insert(batch: list[Row]) -> None:
            with connection.transaction(), connection.cursor() as cursor, cursor.copy(COPY) as copy:
                for row in batch:
                    copy.write_row(row)

        return _timed(insert, lambda: _batch(account_id, now, False), seconds)
