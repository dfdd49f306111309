"""Accounts: creating them, finding one by id or name, the webhook secret, the summaries."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from server.storage.errors import ConflictingWrite
from server.storage.tables import accounts, api_keys


@dataclass(frozen=True)
class AccountSummary:
    id: str
    name: str
    created_at: datetime
    active_keys: int


class AccountRepository:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def add(self, name: str, webhook_secret: str, now: datetime) -> str:
        account_id = str(uuid.uuid4())
        try:
            self._connection.execute(
                insert(accounts).values(
                    id=account_id, name=name, webhook_secret=webhook_secret, created_at=now
                )
            )
        except IntegrityError as error:
            raise ConflictingWrite(f"an account named {name!r} exists") from error
        return account_id

    def id_for(self, id_or_name: str) -> str | None:
        row = self._connection.execute(
            select(accounts.c.id).where(
                (accounts.c.id == id_or_name) | (accounts.c.name == id_or_name)
            )
        ).first()
        return row.id if row else None

    def webhook_secret(self, account_id: str) -> str | None:
        return self._connection.execute(
            select(accounts.c.webhook_secret).where(accounts.c.id == account_id)
        ).scalar_one_or_none()

    def set_webhook_secret(self, account_id: str, webhook_secret: str) -> None:
        self._connection.execute(
            update(accounts)
            .where(accounts.c.id == account_id)
            .values(webhook_secret=webhook_secret)
        )

    def summaries(self) -> list[AccountSummary]:
        active = (
            select(api_keys.c.account_id, func.count().label("active_keys"))
            .where(api_keys.c.revoked_at.is_(None))
            .group_by(api_keys.c.account_id)
            .subquery()
        )
        rows = self._connection.execute(
            select(accounts, func.coalesce(active.c.active_keys, 0).label("active_keys"))
            .outerjoin(active, active.c.account_id == accounts.c.id)
            .order_by(accounts.c.created_at, accounts.c.name)
        )
        return [AccountSummary(r.id, r.name, r.created_at, r.active_keys) for r in rows]
