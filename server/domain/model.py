"""The values a request is made of, before and after validation."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TypeVar, dataclass_transform

T = TypeVar("T")
C = TypeVar("C", bound=type)


@dataclass_transform(frozen_default=True)
def value_object(cls: C) -> C:
    """A dataclass that is frozen to the type checker (mypy refuses any assignment to a
    field) but not at run time, where a frozen dataclass's __init__ sets each field through
    `object.__setattr__`: 0.93 µs against 0.17 µs for 12 fields, measured. A message makes
    four of these on its way in, a 1000-message request 4000: 7 % of the server's time.
    Hashable and compared by value, as a frozen one."""
    return dataclass(unsafe_hash=True)(cls)  # type: ignore[return-value]


def _first_given(own: T | None, fallback: T | None) -> T | None:
    return own if own is not None else fallback


class SenderType(StrEnum):
    CUSTOM = "custom"
    SHARED = "shared"


@value_object
class SenderDraft:
    """`from` as the caller wrote it: type and value unchecked, empty strings kept."""

    type: str
    value: str


@value_object
class MessageDraft:
    """One message, or the defaults, as submitted. None means the field was not given."""

    to: str | None = None
    sender: SenderDraft | None = None
    body: str | None = None
    callback: str | None = None
    channels: tuple[str, ...] | None = None
    id: str | None = None
    send_at: str | None = None

    def merged_over(self, defaults: MessageDraft | None) -> MessageDraft:
        """Each field this message sets wins; each it omits comes whole from the defaults."""
        if defaults is None:
            return self
        pick = _first_given
        return MessageDraft(
            to=pick(self.to, defaults.to),
            sender=pick(self.sender, defaults.sender),
            body=pick(self.body, defaults.body),
            callback=pick(self.callback, defaults.callback),
            channels=pick(self.channels, defaults.channels),
            id=pick(self.id, defaults.id),
            send_at=pick(self.send_at, defaults.send_at),
        )


@value_object
class OutgoingMessage:
    """A merged message that passed every rule, normalised for storage and echo."""

    to: str
    """Destination, digits only."""
    sender_type: SenderType
    sender_id: str | None
    """The custom sender ID; None for shared senders, which are assigned later."""
    body: str
    callback: str | None
    channels: tuple[str, ...]
    """Effective channel priority (the default when none was given)."""
    channels_given: bool
    id: str | None
    """The client's id as submitted; `client_id` is its normalised form."""
    send_at: str | None
    """The submitted timestamp, echoed exactly."""
    send_at_utc: datetime | None
    """The submitted timestamp as an instant, UTC."""
    due_at: datetime
    """When the message becomes due, UTC: `send_at` when scheduled, else acceptance time."""
    scheduled: bool

    @property
    def client_id(self) -> str | None:
        return self.id.lower() if self.id is not None else None

    def fingerprint(self) -> str:
        """Identifies the content, so a reused id can be told apart from a retry.

        A retry sent later still matches: `send_at` counts as the instant given (or its
        absence), not the moment the message was accepted.

        Computed once and kept: the value never changes (frozen to mypy, see value_object).
        """
        kept: str | None = self.__dict__.get("_fingerprint")
        if kept is not None:
            return kept
        content = (
            self.to,
            self.sender_type.value,
            self.sender_id,
            self.body,
            self.callback,
            self.channels,
            self.send_at_utc.isoformat() if self.send_at_utc else None,
        )
        kept = hashlib.sha256(repr(content).encode("utf-8", "surrogatepass")).hexdigest()
        object.__setattr__(self, "_fingerprint", kept)
        return kept


@value_object
class AcceptedMessage:
    """One entry of the answer: a message as it was queued (or, in a dry run, would be).

    A replayed id answers with the stored entry, exactly as it was first answered.
    """

    to: str
    body: str
    sender_type: SenderType
    sender: str
    """The sender ID it goes out from: the custom ID or the assigned shared one."""
    callback: str | None
    channels: tuple[str, ...] | None
    """As given; None when the caller left the default."""
    id: str | None
    send_at: str | None
    message_uuid: str
    batch_uuid: str
    scheduled: bool

    @classmethod
    def of(
        cls, message: OutgoingMessage, sender: str, message_uuid: str, batch_uuid: str
    ) -> AcceptedMessage:
        return cls(
            to=message.to,
            body=message.body,
            sender_type=message.sender_type,
            sender=sender,
            callback=message.callback,
            channels=message.channels if message.channels_given else None,
            id=message.id,
            send_at=message.send_at,
            message_uuid=message_uuid,
            batch_uuid=batch_uuid,
            scheduled=message.scheduled,
        )
