"""Initial schema: accounts, API keys, the shared sender pool, sticky pins and the queue.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("name", name=op.f("uq_accounts_name")),
    )
    op.create_table(
        "shared_senders",
        sa.Column("sender", sa.String(length=15), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sender", name=op.f("pk_shared_senders")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_api_keys_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_api_keys_account_id"), "api_keys", ["account_id"], unique=False)
    op.create_table(
        "queued_messages",
        sa.Column("message_uuid", sa.String(length=36), nullable=False),
        sa.Column("batch_uuid", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("client_id", sa.String(length=36), nullable=True),
        sa.Column("submitted_id", sa.String(length=36), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("destination", sa.String(length=15), nullable=False),
        sa.Column("sender_type", sa.String(length=8), nullable=False),
        sa.Column("sender", sa.String(length=15), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("callback", sa.Text(), nullable=True),
        sa.Column("channels", sa.JSON(), nullable=False),
        sa.Column("channels_given", sa.Boolean(), nullable=False),
        sa.Column("send_at", sa.String(length=64), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("scheduled", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_queued_messages_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("message_uuid", name=op.f("pk_queued_messages")),
        sa.UniqueConstraint(
            "account_id", "client_id", name=op.f("uq_queued_messages_account_id_client_id")
        ),
    )
    op.create_index(
        op.f("ix_queued_messages_account_id_created_at"),
        "queued_messages",
        ["account_id", "created_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_queued_messages_batch_uuid"), "queued_messages", ["batch_uuid"], unique=False
    )
    op.create_index(
        op.f("ix_queued_messages_status_due_at"),
        "queued_messages",
        ["status", "due_at"],
        unique=False,
    )
    op.create_table(
        "sender_pins",
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("destination", sa.String(length=15), nullable=False),
        sa.Column("sender", sa.String(length=15), nullable=False),
        sa.Column("pinned_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_sender_pins_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", "destination", name=op.f("pk_sender_pins")),
    )


def downgrade() -> None:
    op.drop_table("sender_pins")
    op.drop_index(op.f("ix_queued_messages_status_due_at"), table_name="queued_messages")
    op.drop_index(op.f("ix_queued_messages_batch_uuid"), table_name="queued_messages")
    op.drop_index(op.f("ix_queued_messages_account_id_created_at"), table_name="queued_messages")
    op.drop_table("queued_messages")
    op.drop_index(op.f("ix_api_keys_account_id"), table_name="api_keys")
    op.drop_table("api_keys")
    op.drop_table("shared_senders")
    op.drop_table("accounts")
