"""The storage ceiling: the bare sqlite3 driver inserting message-shaped rows into a fresh,
migrated database, `executemany` in 1000-row transactions, WAL with synchronous=FULL."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from server.service import accounts
from server.storage.database import create_database_engine
from server.storage.migrate import upgrade
from server.storage.unit_of_work import UnitOfWork

ROWS_PER_TRANSACTION = 1000
INSERT = (
    "INSERT INTO queued_messages (message_uuid, batch_uuid, account_id, client_id, submitted_id, "
    "fingerprint, destination, sender_type, sender, body, callback, channels, channels_given, "
    "send_at, due_at, scheduled, status, created_at) "
    "VALUES (?, ?, ?, NULL, NULL, ?, ?, 'shared', '447700900400', ?, NULL, ?, 0, NULL, ?, 0, "
    "'queued', ?)"
)
CHANNELS = json.dumps(["rcs", "sms"])


def _batch(account_id: str) -> list[tuple[str, ...]]:
    """The rows of one 1000-message request, as SQLAlchemy stores them in SQLite."""
    batch_uuid = str(uuid.uuid4())
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    rows: list[tuple[str, ...]] = []
    for i in range(ROWS_PER_TRANSACTION):
        to, body = f"4470{i:08d}", f"Benchmark message {i}"
        fingerprint = hashlib.sha256(f"{to}\0{body}".encode()).hexdigest()
        rows.append(
            (str(uuid.uuid4()), batch_uuid, account_id, fingerprint, to, body, CHANNELS, now, now)
        )
    return rows


def sqlite_rows_per_s(directory: Path, seconds: float) -> float:
    """Rows/s into a fresh database in `directory` for about `seconds` (only the driver's
    time counts: the rows are built outside it)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "driver.db"
    engine = create_database_engine(f"sqlite:///{path}")
    upgrade(engine)
    account_id = accounts.create_account(lambda: UnitOfWork(engine), "driver").id
    engine.dispose()
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA foreign_keys=ON")
        inserted, spent = 0, 0.0
        while spent < seconds:
            rows = _batch(account_id)
            started = time.perf_counter()
            connection.execute("BEGIN")
            connection.executemany(INSERT, rows)
            connection.execute("COMMIT")
            spent += time.perf_counter() - started
            inserted += len(rows)
    finally:
        connection.close()
    return inserted / spent
