"""The HTTP driver: a carrier gateway of the operator's, over JSON both ways (how a real
carrier plugs in without a driver of its own)."""

from __future__ import annotations

import http.client
import json
import logging
from typing import Any
from urllib.parse import urlsplit

from server.delivery.drivers.base import Dispatch
from server.delivery.receipts import CarrierReceipt
from server.domain.delivery import (
    MAX_CODE_LENGTH,
    UNDELIVERABLE,
    ReceiptCode,
    known_receipt_code,
    receipt_code,
)
from server.domain.dispatching import Accepted, Outcome, Rejected, TryLater, Unsupported
from server.domain.errors import InvalidRequest, Violation
from server.json_logs import FIELDS

log = logging.getLogger("mplus.dispatch")

CARRIER = "http"
MAX_CARRIER_ID_LENGTH = 64
"""The longest carrier id kept (the gateway's own id for a part)."""
MAX_PARTS = 255
"""The most parts one answer may name: a concatenated SMS has at most 255."""
MAX_DESCRIPTION_LENGTH = 1000

MAX_ANSWER_BYTES = 64 * 1024
"""A gateway's answer longer than this is not one: read no further, reject the send."""


class HttpDriver:
    """Posts each send to a carrier gateway.

    Request: `POST {url}`, `Content-Type: application/json`, body
    `{"messageuuid", "batchuuid", "to", "from", "body", "channel", "attempt"}` (`to` digits
    only, as stored; `attempt` the try on this channel, from 1).

    Answer, 2xx with a JSON object `{"status", "code", "description", "id" | "ids"}`:
    - `accepted` with a `code`: final at once with that receipt (`00` delivered; any other
      code is an undelivered receipt).
    - `accepted` without one: with the carrier until the gateway posts the receipt of each
      part (`gateway_receipt`) under the ids it names: `ids` (one per part, in order), `id`
      (one part), or neither (one part, known by the message's uuid).
    - `rejected`: failed with `code` (default `42`; a delivered code here counts as `42`).
    - `unsupported`: the channel cannot reach the handset; the next channel is tried.
    A known code keeps this service's description (the one `/dr-responses` lists); an unknown
    one takes the answer's `description`.

    Any 5xx, a timeout or a connection error: tried again later. Anything else (4xx, a
    redirect, a body that is not such an object): failed with `42`. `timeout_s` bounds the
    connect and each read and write, not the whole exchange.
    """

    carrier = CARRIER

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
        return _outcome(answer, dispatch.message_uuid)


def _outcome(answer: bytes, message_uuid: str) -> Outcome:
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
        if code is not None:
            return Accepted(receipt=_receipt(code, description))
        return Accepted(_carrier_ids(parsed, message_uuid))
    if status == "rejected":
        receipt = _receipt(code or UNDELIVERABLE.code, description)
        return Rejected(UNDELIVERABLE if receipt.delivered else receipt)
    return Rejected(UNDELIVERABLE)


def _carrier_ids(answer: dict[str, Any], message_uuid: str) -> tuple[str, ...]:
    """The parts an acceptance names: `ids`, `id` (a number is read as its digits), or the
    message's uuid. The carrier took the message whatever it calls the parts, so ids that
    are not what the contract says are logged and the message's uuid stands in: failing a
    message on its way to the handset would be a false receipt."""
    given = answer["ids"] if "ids" in answer else [answer.get("id", message_uuid)]
    if isinstance(given, list) and 0 < len(given) <= MAX_PARTS:
        ids = [str(i) if isinstance(i, int) and not isinstance(i, bool) else i for i in given]
        if all(isinstance(i, str) and 0 < len(i) <= MAX_CARRIER_ID_LENGTH for i in ids) and len(
            set(ids)
        ) == len(ids):
            return tuple(ids)
    log.warning(
        "the carrier gateway accepted a message under ids that are not strings of 1 to %d "
        "characters, one per part, each once; its uuid stands in for them",
        MAX_CARRIER_ID_LENGTH,
        extra={FIELDS: {"message_uuid": message_uuid}},
    )
    return (message_uuid,)


def gateway_receipt(carrier_id: str, code: str, description: str) -> CarrierReceipt:
    """The receipt a gateway posts (`{"id", "code", "description"}`), checked as a request
    is: InvalidRequest lists every field that breaks its rule. A known code keeps this
    service's description; a carrier's own takes the one given."""
    violations = []
    if not carrier_id:
        violations.append(Violation("id", "is required", "REQUIRED"))
    elif len(carrier_id) > MAX_CARRIER_ID_LENGTH:
        violations.append(
            Violation("id", f"must be at most {MAX_CARRIER_ID_LENGTH} characters", "TOO_LONG")
        )
    if not code:
        violations.append(Violation("code", "is required", "REQUIRED"))
    elif len(code) > MAX_CODE_LENGTH:
        violations.append(
            Violation("code", f"must be at most {MAX_CODE_LENGTH} characters", "TOO_LONG")
        )
    if len(description) > MAX_DESCRIPTION_LENGTH:
        violations.append(
            Violation(
                "description", f"must be at most {MAX_DESCRIPTION_LENGTH} characters", "TOO_LONG"
            )
        )
    if violations:
        raise InvalidRequest(violations)
    return CarrierReceipt(carrier_id, _receipt(code, description or None))


def _receipt(code: str, description: str | None) -> ReceiptCode:
    """A known code as this service describes it; a carrier's own with its description."""
    known = known_receipt_code(code)
    if known is not None or not description:
        return known or receipt_code(code)
    return ReceiptCode(code, description, False)
