"""The schema: one MetaData with a naming convention, changed only through Alembic."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on PostgreSQL and on SQLite (which keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where an aware UTC datetime is required")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


accounts = Table(
    "accounts",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", UtcDateTime(), nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("account_id", String(36), ForeignKey("accounts.id"), nullable=False, index=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("revoked_at", UtcDateTime(), nullable=True),
)

shared_senders = Table(
    "shared_senders",
    metadata,
    Column("sender", String(15), primary_key=True),
    Column("added_at", UtcDateTime(), nullable=False),
)

sender_pins = Table(
    "sender_pins",
    metadata,
    Column("account_id", String(36), ForeignKey("accounts.id"), nullable=False),
    Column("destination", String(15), nullable=False),
    Column("sender", String(15), nullable=False),
    Column("pinned_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("account_id", "destination"),
)
"""The sticky rule's memory: which shared sender an account uses for a destination."""

queued_messages = Table(
    "queued_messages",
    metadata,
    Column("message_uuid", String(36), primary_key=True),
    Column("batch_uuid", String(36), nullable=False, index=True),
    Column("account_id", String(36), ForeignKey("accounts.id"), nullable=False),
    Column("client_id", String(36), nullable=True),
    Column("submitted_id", String(36), nullable=True),
    Column("fingerprint", String(64), nullable=False),
    Column("destination", String(15), nullable=False),
    Column("sender_type", String(8), nullable=False),
    Column("sender", String(15), nullable=False),
    Column("body", Text(), nullable=False),
    Column("callback", Text(), nullable=True),
    Column("channels", JSON(), nullable=False),
    Column("channels_given", Boolean(), nullable=False),
    Column("send_at", String(64), nullable=True),
    Column("due_at", UtcDateTime(), nullable=False),
    Column("scheduled", Boolean(), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    UniqueConstraint("account_id", "client_id"),
    Index(None, "status", "due_at"),
    Index(None, "account_id", "created_at"),
)
"""The queue: everything a dispatcher needs to send a message and report on it."""
