"""Channel drivers, one module each: a send side the dispatcher calls, and an inbound side
that brings what the carrier reports (receipts now) to the ReceiptIntake."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from server.config import Delivery
from server.delivery.drivers.base import ChannelDriver, Dispatch
from server.delivery.drivers.http import HttpDriver
from server.delivery.drivers.sandbox import SandboxDriver, SandboxReceipts
from server.delivery.receipts import ReceiptIntake
from server.domain.dispatching import Accepted, Outcome, Rejected, TryLater, Unsupported

__all__ = [
    "Accepted",
    "ChannelDriver",
    "Dispatch",
    "HttpDriver",
    "Outcome",
    "Rejected",
    "SandboxDriver",
    "TryLater",
    "Unsupported",
    "driver_for",
    "inbound_rounds",
]


def driver_for(delivery: Delivery) -> ChannelDriver:
    """The driver the settings name (MPLUS_CHANNEL_DRIVER)."""
    if delivery.driver == "sandbox":
        return SandboxDriver(delivery.sandbox_receipt_delay_ms / 1000)
    if delivery.driver == "http":
        return HttpDriver(delivery.http_url, delivery.http_timeout_ms / 1000)
    raise ValueError(f"unknown channel driver {delivery.driver!r}")


def inbound_rounds(delivery: Delivery, intake: ReceiptIntake) -> dict[str, Callable[[], int]]:
    """The work a dispatcher process runs for its driver's inbound side, by name: one round
    at a time, answering how much it did. The sandbox reports its receipts there; the http
    driver's gateway posts to the gateway's port instead, where the servers take them."""
    if delivery.driver == "sandbox":
        delay = timedelta(milliseconds=delivery.sandbox_receipt_delay_ms)
        return {"sandbox receipts": SandboxReceipts(intake, delay).run_once}
    return {}
