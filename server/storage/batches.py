"""Batches as an account sees them: receipts per batch, pending scheduled batches, cancelling."""

from __future__ import annotations

from sqlalchemy import Connection


class BatchRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection
