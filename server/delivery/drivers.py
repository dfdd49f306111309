"""Channel drivers: one small interface between the dispatcher and a carrier, and two of them."""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from server.config import Delivery
from server.domain.delivery import (
    DELIVERED,
    HANDSET_UNREACHABLE,
    MAX_CODE_LENGTH,
    OPTED_OUT,
    REJECTED_AS_SPAM,
    UNDELIVERABLE,
    ReceiptCode,
    known_receipt_code,
    receipt_code,
)


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


@dataclass(frozen=True)
class Accepted:
    """The carrier took the message; its final receipt arrives `receipt_after_s` later."""

    receipt: ReceiptCode
    receipt_after_s: float = 0.0


@dataclass(frozen=True)
class Rejected:
    """The carrier refused the message for good: it fails with `receipt`."""

    receipt: ReceiptCode


@dataclass(frozen=True)
class Unsupported:
    """This channel cannot reach the handset: the message falls back to its next channel."""

    reason: str


@dataclass(frozen=True)
class TryLater:
    """A carrier timeout or another passing failure: this channel is tried again, later."""

    reason: str


Outcome = Accepted | Rejected | Unsupported | TryLater


class ChannelDriver(Protocol):
    def send(self, dispatch: Dispatch) -> Outcome:
        """Hands one message to the carrier. May be slow; is never called in a transaction.
        Raising is a bug in the driver: the dispatcher logs it and treats it as TryLater."""
        ...


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
    """

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
        receipt = HANDSET_UNREACHABLE if ending == "22" else DELIVERED
        return Accepted(receipt, self._receipt_delay_s)


MAX_ANSWER_BYTES = 64 * 1024
"""A gateway's answer longer than this is not one: read no further, reject the send."""


class HttpDriver:
    """Posts each send to a carrier gateway: how a real one plugs in.

    Request: `POST {url}`, `Content-Type: application/json`, body
    `{"messageuuid", "batchuuid", "to", "from", "body", "channel", "attempt"}` (`to` digits
    only, as stored; `attempt` the try on this channel, from 1).

    Answer, 2xx with a JSON object `{"status": ..., "code": ..., "description": ...}`:
    - `accepted`: sent; final at once with receipt `code` (default `00`, delivered; any other
      code is an undelivered receipt). A gateway that learns the receipt later has no way yet
      to report it: it should answer once it knows.
    - `rejected`: failed with `code` (default `42`; a delivered code here counts as `42`).
    - `unsupported`: the channel cannot reach the handset; the next channel is tried.
    A known code keeps this service's description (the one `/dr-responses` lists); an unknown
    one takes the answer's `description`.

    Any 5xx, a timeout or a connection error: tried again later. Anything else (4xx, a
    redirect, a body that is not such an object): failed with `42`. `timeout_s` bounds the
    connect and each read and write, not the whole exchange.
    """

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the http driver needs an http:// or https:// URL, got {url!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout_s = timeout_s

    def send(self, dispatch: Dispatch) -> Outcome:
        body = json.dumps(
            {
                "messageuuid": dispatch.message_uuid,
                "batchuuid": dispatch.batch_uuid,
                "to": dispatch.destination,
                "from": dispatch.sender,
                "body": dispatch.body,
                "channel": dispatch.channel,
                "attempt": dispatch.attempt,
            },
            ensure_ascii=False,
        ).encode()
        connection_class = (
            http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        )
        connection = connection_class(self._host, self._port, timeout=self._timeout_s)
        try:
            connection.request(
                "POST", self._target, body, headers={"Content-Type": "application/json"}
            )
            response = connection.getresponse()
            answer = response.read(MAX_ANSWER_BYTES + 1)
        except (OSError, http.client.HTTPException) as error:  # timeouts are OSErrors
            return TryLater(f"carrier gateway unreachable: {type(error).__name__}: {error}")
        finally:
            connection.close()
        if response.status >= 500:
            return TryLater(f"carrier gateway answered {response.status}")
        if not 200 <= response.status < 300:
            return Rejected(UNDELIVERABLE)
        return _outcome(answer)


def _outcome(answer: bytes) -> Outcome:
    """A 2xx answer's outcome; anything but the documented object is UNDELIVERABLE."""
    if len(answer) > MAX_ANSWER_BYTES:
        return Rejected(UNDELIVERABLE)
    try:
        parsed = json.loads(answer)
    except ValueError:
        return Rejected(UNDELIVERABLE)
    if not isinstance(parsed, dict):
        return Rejected(UNDELIVERABLE)
    status, code, description = (parsed.get(k) for k in ("status", "code", "description"))
    if not isinstance(description, str | None) or not (
        code is None or (isinstance(code, str) and 0 < len(code) <= MAX_CODE_LENGTH)
    ):
        return Rejected(UNDELIVERABLE)
    if status == "unsupported":
        return Unsupported(description or "the carrier gateway cannot reach the handset")
    if status == "accepted":
        return Accepted(_receipt(code or DELIVERED.code, description))
    if status == "rejected":
        receipt = _receipt(code or UNDELIVERABLE.code, description)
        return Rejected(UNDELIVERABLE if receipt.delivered else receipt)
    return Rejected(UNDELIVERABLE)


def _receipt(code: str, description: str | None) -> ReceiptCode:
    """A known code as this service describes it; a carrier's own with its description."""
    known = known_receipt_code(code)
    if known is not None or not description:
        return known or receipt_code(code)
    return ReceiptCode(code, description, False)


def driver_for(delivery: Delivery) -> ChannelDriver:
    """The driver the settings name (MPLUS_CHANNEL_DRIVER)."""
    if delivery.driver == "sandbox":
        return SandboxDriver(delivery.sandbox_receipt_delay_ms / 1000)
    if delivery.driver == "http":
        return HttpDriver(delivery.http_url, delivery.http_timeout_ms / 1000)
    raise ValueError(f"unknown channel driver {delivery.driver!r}")
