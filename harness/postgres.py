"""A throwaway PostgreSQL server (pgserver) and fresh databases on it, dropped after use."""

from __future__ import annotations

import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url


@contextmanager
def postgres_server(prefix: str) -> Iterator[str]:
    """The base URL of a PostgreSQL server of our own, its data in a new directory named
    `prefix`..., stopped and removed on exit."""
    with warnings.catch_warnings():  # platformdirs warns on import when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        import pgserver

    # Not under pytest's basetemp: another pytest run on the machine may rotate that away.
    data = Path(tempfile.mkdtemp(prefix=prefix))
    server = pgserver.get_server(data, cleanup_mode="stop")  # type: ignore[attr-defined]
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()
        shutil.rmtree(data, ignore_errors=True)


@contextmanager
def fresh_postgres_database(base_url: str) -> Iterator[str]:
    """The URL of a new, empty database on the server at `base_url`, dropped on exit."""
    name = f"mplus_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        make_url(base_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(base_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
