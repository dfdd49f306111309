"""Receipts that arrive later: the carrier's id for each part it accepted, and its receipt.

A message still `sent` from before this revision had its receipt announced with the send
(`receipt_code`, due at `due_at`): it gets one part under the carrier `announced`, already
receipted, so that the dispatcher settles it at its `due_at` as it would have before.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "carrier_parts",
        sa.Column("carrier", sa.String(length=16), nullable=False),
        sa.Column("carrier_id", sa.String(length=64), nullable=False),
        sa.Column("message_uuid", sa.String(length=36), nullable=True),
        sa.Column("part", sa.Integer(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("receipt_code", sa.String(length=8), nullable=True),
        sa.Column("receipt_description", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["message_uuid"],
            ["queued_messages.message_uuid"],
            name="fk_carrier_parts_message_uuid_queued_messages",
        ),
        sa.PrimaryKeyConstraint("carrier", "carrier_id", name="pk_carrier_parts"),
    )
    op.create_index("ix_carrier_parts_message_uuid", "carrier_parts", ["message_uuid"])
    op.create_index(
        "ix_carrier_parts_carrier_received_at_sent_at",
        "carrier_parts",
        ["carrier", "received_at", "sent_at"],
    )
    op.execute(
        """
        INSERT INTO carrier_parts (carrier, carrier_id, message_uuid, part, sent_at,
                                   receipt_code, receipt_description, received_at)
        SELECT 'announced', message_uuid, message_uuid, 0, due_at,
               receipt_code, receipt_description, due_at
        FROM queued_messages
        WHERE status = 'sent' AND receipt_code IS NOT NULL
        """
    )
    op.execute(
        "UPDATE queued_messages SET receipt_code = NULL, receipt_description = NULL "
        "WHERE status = 'sent'"
    )


def downgrade() -> None:
    op.drop_index("ix_carrier_parts_carrier_received_at_sent_at", table_name="carrier_parts")
    op.drop_index("ix_carrier_parts_message_uuid", table_name="carrier_parts")
    op.drop_table("carrier_parts")
