"""Delivery: dispatch state on the queue, every send attempt, the receipt webhook outbox, and a
webhook signing secret per account.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("webhook_secret", sa.String(length=64), nullable=True))
    accounts = sa.table("accounts", sa.column("id", sa.String), sa.column("webhook_secret"))
    connection = op.get_bind()
    for (account_id,) in connection.execute(sa.select(accounts.c.id)).all():
        connection.execute(
            accounts.update()
            .where(accounts.c.id == account_id)
            .values(webhook_secret=secrets.token_hex(32))
        )
    with op.batch_alter_table("accounts") as batch:
        batch.alter_column("webhook_secret", existing_type=sa.String(length=64), nullable=False)

    with op.batch_alter_table("queued_messages") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(
            sa.Column("channel_index", sa.Integer(), server_default="0", nullable=False)
        )
        batch.add_column(sa.Column("channel", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("lease_owner", sa.String(length=36), nullable=True))
        batch.add_column(sa.Column("receipt_code", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("receipt_description", sa.Text(), nullable=True))
        batch.add_column(sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index(
            batch.f("ix_queued_messages_account_id_status"), ["account_id", "status"]
        )

    op.create_table(
        "delivery_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("message_uuid", sa.String(length=36), nullable=False),
        sa.Column("channel", sa.String(length=8), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=8), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_uuid"],
            ["queued_messages.message_uuid"],
            name=op.f("fk_delivery_attempts_message_uuid_queued_messages"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_attempts")),
    )
    op.create_index(
        op.f("ix_delivery_attempts_message_uuid"), "delivery_attempts", ["message_uuid"]
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("message_uuid", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_owner", sa.String(length=36), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_webhook_deliveries_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["message_uuid"],
            ["queued_messages.message_uuid"],
            name=op.f("fk_webhook_deliveries_message_uuid_queued_messages"),
        ),
        sa.PrimaryKeyConstraint("message_uuid", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index(
        op.f("ix_webhook_deliveries_status_due_at"), "webhook_deliveries", ["status", "due_at"]
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_webhook_deliveries_status_due_at"), table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index(op.f("ix_delivery_attempts_message_uuid"), table_name="delivery_attempts")
    op.drop_table("delivery_attempts")
    with op.batch_alter_table("queued_messages") as batch:
        batch.drop_index(batch.f("ix_queued_messages_account_id_status"))
        for column in (
            "finished_at",
            "receipt_description",
            "receipt_code",
            "lease_owner",
            "channel",
            "channel_index",
            "attempts",
        ):
            batch.drop_column(column)
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("webhook_secret")
