"""The delivery-receipt webhook outbox: rows written with a message's final state, posted later."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, insert

from server.storage.tables import webhook_deliveries


class WebhookOutbox:
    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def add(self, message_uuid: str, account_id: str, url: str, body: str, now: datetime) -> None:
        """Queues one receipt, due at once. The message uuid is the key: a message's receipt
        can be queued once only (a second try is an IntegrityError, a bug)."""
        self._connection.execute(
            insert(webhook_deliveries).values(
                message_uuid=message_uuid,
                account_id=account_id,
                url=url,
                body=body,
                status="pending",
                attempts=0,
                due_at=now,
                created_at=now,
            )
        )
