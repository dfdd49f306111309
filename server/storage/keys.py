"""API keys: stored as hashes, looked up once per request, revoked at once."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Connection, bindparam, insert, select, update

from server.storage.tables import api_keys

_ACCOUNT_FOR = select(api_keys.c.account_id).where(
    api_keys.c.key_hash == bindparam("key_hash"), api_keys.c.revoked_at.is_(None)
)
"""Built once, as every statement a request runs: building one costs several times what
running it from SQLAlchemy's compiled cache does."""


class KeyRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._accounts: dict[str, str | None] = {}
        """Answers already read in this transaction (a unit of work's, which a group commit
        shares among requests). On SQLite only its own writes could change them; on
        PostgreSQL a revocation committed meanwhile counts from the next transaction on."""

    def add(self, account_id: str, key_hash: str, now: datetime) -> None:
        self._accounts.clear()
        self._connection.execute(
            insert(api_keys).values(
                id=str(uuid.uuid4()), account_id=account_id, key_hash=key_hash, created_at=now
            )
        )

    def account_for(self, key_hash: str) -> str | None:
        """The account an active key belongs to; None for unknown and revoked keys alike."""
        if key_hash not in self._accounts:
            self._accounts[key_hash] = self._connection.execute(
                _ACCOUNT_FOR, {"key_hash": key_hash}
            ).scalar()
        return self._accounts[key_hash]

    def revoke(self, key_hash: str, now: datetime) -> bool:
        self._accounts.clear()
        result = self._connection.execute(
            update(api_keys)
            .where(api_keys.c.key_hash == key_hash, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        return result.rowcount > 0
