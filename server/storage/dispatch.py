"""The dispatcher's reads and writes on the queue: claims under a lease, attempts, outcomes."""

from __future__ import annotations

from sqlalchemy import Connection


class DispatchRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection
