"""The shared sender pool and the sticky pins of accounts' destinations to its senders."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Insert, bindparam, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from server.storage.lists import DIALECTS, any_of, bound_list
from server.storage.tables import sender_pins, shared_senders
from server.storage.upsert import upsertable_insert

_POOL = select(shared_senders.c.sender).order_by(shared_senders.c.sender)
_PINS = select(sender_pins.c.destination, sender_pins.c.sender).join(
    shared_senders, shared_senders.c.sender == sender_pins.c.sender
)
_PINNED_ONE = _PINS.where(
    sender_pins.c.account_id == bindparam("account_id"),
    sender_pins.c.destination == bindparam("destination"),
)
"""One destination (a single message's): no list to bind."""
_PINNED = {
    dialect: _PINS.where(
        sender_pins.c.account_id == bindparam("account_id"),
        any_of(sender_pins.c.destination, "destinations", dialect),
    )
    for dialect in DIALECTS
}


def _pin_statement(insert_into: Callable[[Any], Any]) -> Insert:
    """A pin per row; a pin whose sender left the pool is replaced, a live one kept."""
    statement = insert_into(sender_pins)
    return statement.on_conflict_do_update(  # type: ignore[no-any-return]
        index_elements=[sender_pins.c.account_id, sender_pins.c.destination],
        set_={"sender": statement.excluded.sender, "pinned_at": statement.excluded.pinned_at},
        where=sender_pins.c.sender.not_in(select(shared_senders.c.sender)),
    )


_PIN = {"postgresql": _pin_statement(postgresql.insert), "sqlite": _pin_statement(sqlite.insert)}
"""By dialect name: ON CONFLICT is each dialect's own construct."""


class SenderRepository:
    """The shared sender pool and the sticky pins of accounts to pool senders."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def add(self, senders: Collection[str], now: datetime) -> int:
        if not senders:
            return 0
        statement = (
            upsertable_insert(self._connection, shared_senders)
            .values([{"sender": s, "added_at": now} for s in senders])
            .on_conflict_do_nothing()
            .returning(shared_senders.c.sender)
        )
        return len(self._connection.execute(statement).all())  # rowcount is -1 on psycopg

    def remove(self, senders: Collection[str]) -> int:
        result = self._connection.execute(
            delete(shared_senders).where(shared_senders.c.sender.in_(list(senders)))
        )
        return result.rowcount

    def pool(self) -> list[str]:
        return list(self._connection.execute(_POOL).scalars())

    def pinned(self, account_id: str, destinations: Collection[str]) -> dict[str, str]:
        """Destination → pinned sender, for pins whose sender is still in the pool."""
        if len(destinations) == 1:
            (destination,) = destinations
            rows = self._connection.execute(
                _PINNED_ONE, {"account_id": account_id, "destination": destination}
            )
        else:
            rows = self._connection.execute(
                _PINNED[self._connection.dialect.name],
                {
                    "account_id": account_id,
                    "destinations": bound_list(self._connection, destinations),
                },
            )
        return {destination: sender for destination, sender in rows}

    def pin(self, account_id: str, choices: Mapping[str, str], now: datetime) -> None:
        """Pins each destination to its chosen sender unless a live pin already exists.

        A pin whose sender left the pool is replaced; a live pin, including one a
        concurrent transaction just committed, is kept. Read `pinned` afterwards for the
        winners.
        """
        if not choices:
            return
        self._connection.execute(
            _PIN[self._connection.dialect.name],
            [
                {"account_id": account_id, "destination": d, "sender": s, "pinned_at": now}
                for d, s in sorted(choices.items())
            ],
        )
