"""The sandbox: a carrier without a network, whose outcomes the destination's digits decide."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from server.delivery.drivers.base import Dispatch
from server.delivery.receipts import CarrierReceipt, ReceiptIntake
from server.domain.delivery import (
    DELIVERED,
    HANDSET_UNREACHABLE,
    OPTED_OUT,
    REJECTED_AS_SPAM,
    ReceiptCode,
    units,
)
from server.domain.dispatching import Accepted, Outcome, Rejected, TryLater, Unsupported
from server.storage.unit_of_work import UnitOfWork

CARRIER = "sandbox"
REPORTED_AT_ONCE = 500
"""Receipts the sandbox reports in one transaction at the most."""


def sandbox_receipt(destination: str) -> ReceiptCode:
    """The receipt the sandbox reports for a part it accepted."""
    return HANDSET_UNREACHABLE if destination.endswith("22") else DELIVERED


class SandboxDriver:
    """A carrier without a network, the default: the destination's last two digits decide.

    | ends in | outcome |
    |---|---|
    | `22` | accepted; its receipt, after the delay, is code `22` (handset off): failed |
    | `51` | RCS unsupported: an `rcs` try falls back to the next channel; `sms` delivers |
    | `52` | every channel unsupported: failed, code `30` once no channel is left |
    | `53` | carrier timeout on the first two tries on a channel, then delivered |
    | `54` | carrier timeout on every try: failed, code `41`, after the last attempt |
    | `55` | rejected as spam at once: failed, code `31` |
    | `56` | the user opted out of business messages, at once: failed, code `32` |
    | other | delivered, code `00`, its receipt after the delay |

    An accepted message is with the carrier, one id per SMS part, until SandboxReceipts
    reports its receipts; with no delay it is final at once, as a carrier that knows the
    outcome when it answers."""

    carrier = CARRIER

    def __init__(self, receipt_delay_s: float = 1.0) -> None:
        self._receipt_delay_s = receipt_delay_s

    def send(self, dispatch: Dispatch) -> Outcome:
        ending = dispatch.destination[-2:]
        if ending == "51" and dispatch.channel == "rcs":
            return Unsupported("sandbox: the handset has no RCS")
        if ending == "52":
            return Unsupported(f"sandbox: the handset has no {dispatch.channel.upper()}")
        if (ending == "53" and dispatch.attempt <= 2) or ending == "54":
            return TryLater("sandbox: the carrier did not answer in time")
        if ending == "55":
            return Rejected(REJECTED_AS_SPAM)
        if ending == "56":
            return Rejected(OPTED_OUT)
        if self._receipt_delay_s <= 0:
            return Accepted(receipt=sandbox_receipt(dispatch.destination))
        parts = units(dispatch.body)
        return Accepted(tuple(f"sbx-{uuid.uuid4().hex}" for _ in range(parts)))


@dataclass
class SandboxReceipts:
    """The sandbox's inbound side: every part it accepted `delay` ago gets its receipt,
    through the same door as a real carrier's. It finds them in what mplus recorded of the
    sends, so a receipt is reported even after the dispatcher that sent the part died; two
    dispatchers never report one part at once (the rows stay locked until the commit), and a
    part reported twice anyway is recorded once."""

    intake: ReceiptIntake
    delay: timedelta

    def run_once(self) -> int:
        """Reports the due receipts; answers how many."""
        return len(self.intake.collected(CARRIER, self._due))

    def _due(self, uow: UnitOfWork, now: datetime) -> list[CarrierReceipt]:
        due = uow.carrier.unreported(CARRIER, now - self.delay, REPORTED_AT_ONCE)
        return [CarrierReceipt(part.carrier_id, sandbox_receipt(part.destination)) for part in due]
