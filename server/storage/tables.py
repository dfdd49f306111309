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
    Integer,
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
    Column("webhook_secret", String(64), nullable=False),
)
"""`webhook_secret` signs the account's delivery-receipt webhooks (HMAC-SHA256)."""

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
    # The content's hash, to tell a retry from a reused id: "" for a message without an id.
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
    Column("attempts", Integer(), nullable=False, server_default="0"),
    Column("channel_index", Integer(), nullable=False, server_default="0"),
    Column("channel", String(8), nullable=True),
    Column("lease_owner", String(36), nullable=True),
    Column("receipt_code", String(8), nullable=True),
    Column("receipt_description", Text(), nullable=True),
    Column("finished_at", UtcDateTime(), nullable=True),
    UniqueConstraint("account_id", "client_id"),
    Index(None, "status", "due_at"),
    Index(None, "account_id", "created_at"),
    Index(None, "account_id", "status"),
)
"""The queue: everything a dispatcher needs to send a message and report on it.

`status` (server.domain.delivery.MessageStatus) says what `due_at` means: queued, when it may
be sent (or retried); sending, when its dispatcher's lease runs out (`lease_owner` holds the
lease); sent (with the carrier), when it expires unless its receipts came. `channel_index` is
the position in `channels` being tried, `attempts` the tries on it; the receipt columns hold
the final receipt."""

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", Integer(), primary_key=True, autoincrement=True),
    Column(
        "message_uuid",
        String(36),
        ForeignKey("queued_messages.message_uuid"),
        nullable=False,
        index=True,
    ),
    Column("channel", String(8), nullable=False),
    Column("attempt", Integer(), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("code", String(8), nullable=True),
    Column("description", Text(), nullable=True),
    Column("at", UtcDateTime(), nullable=False),
)
"""Every try of every message on a channel, and what the driver answered."""

carrier_parts = Table(
    "carrier_parts",
    metadata,
    Column("carrier", String(16), nullable=False),
    Column("carrier_id", String(64), nullable=False),
    Column("message_uuid", String(36), ForeignKey("queued_messages.message_uuid"), nullable=True),
    Column("part", Integer(), nullable=True),
    Column("sent_at", UtcDateTime(), nullable=True),
    Column("receipt_code", String(8), nullable=True),
    Column("receipt_description", Text(), nullable=True),
    Column("received_at", UtcDateTime(), nullable=True),
    PrimaryKeyConstraint("carrier", "carrier_id"),
    Index(None, "message_uuid"),
    Index(None, "carrier", "received_at", "sent_at"),
)
"""What each carrier holds of ours, by the carrier's own id: one row per part it accepted
(`message_uuid`, `part` from 0, `sent_at`), with its receipt once one came. A receipt may
come first: its row then waits without a message until the send's answer names its id.
One row per id makes the two meet whatever their order, and a receipt count once."""

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column(
        "message_uuid", String(36), ForeignKey("queued_messages.message_uuid"), primary_key=True
    ),
    Column("account_id", String(36), ForeignKey("accounts.id"), nullable=False),
    Column("url", Text(), nullable=False),
    Column("body", Text(), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer(), nullable=False, server_default="0"),
    Column("due_at", UtcDateTime(), nullable=False),
    Column("lease_owner", String(36), nullable=True),
    Column("last_error", Text(), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("finished_at", UtcDateTime(), nullable=True),
    Index(None, "status", "due_at"),
)
"""The delivery-receipt outbox: one row per message with a callback, written in the same
transaction as the message's final state (so a receipt is never lost, nor queued twice).
`body` is the exact JSON posted and signed; `status` pending / delivered / given_up, and
`due_at` the next post (or, leased, when the lease runs out)."""
