"""What every driver shares: the send it is given, and what it answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from server.domain.dispatching import Outcome


@dataclass(frozen=True)
class Dispatch:
    """One try of one message on one channel: everything a carrier needs to send it."""

    message_uuid: str
    batch_uuid: str
    account_id: str
    destination: str
    """Digits only, no plus."""
    sender: str
    body: str
    channel: str
    attempt: int
    """This try's number on this channel, from 1."""


class ChannelDriver(Protocol):
    """The outbound side of a carrier: one send at a time, from the dispatcher."""

    carrier: str
    """The name its parts' carrier ids are kept under (ids are unique per carrier only)."""

    def send(self, dispatch: Dispatch) -> Outcome:
        """Hands one message to the carrier. May be slow; is never called in a transaction.
        Raising is a bug in the driver: the dispatcher logs it and treats it as TryLater."""
        ...
