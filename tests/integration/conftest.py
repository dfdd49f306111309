"""Fixtures the integration tests share beyond tests/conftest.py's databases."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from server.storage.database import create_database_engine


@pytest.fixture
def second_engine(database_url: str, engine: Engine) -> Iterator[Engine]:
    """Another engine on the same (already migrated) database: another process's."""
    other = create_database_engine(database_url, pool_size=4)
    yield other
    other.dispose()
