"""What every driver shares: the send it is given, and the door its inbound side reports to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from server.delivery.receipts import CarrierReceipt
from server.domain.dispatching import Outcome
from server.storage.carrier import Matched


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


class Inbound(Protocol):
    """Where a driver's inbound side hands what its carrier reports (server.delivery.receipts
    .ReceiptIntake). It returns once that is committed: only then may the carrier be told it
    was received."""

    def __call__(self, carrier: str, receipts: Sequence[CarrierReceipt]) -> list[Matched]: ...
