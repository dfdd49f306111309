"""The http driver's receipts, end to end: `mplus up` sends through a carrier gateway the test
runs, which accepts each part under its own id; the gateway posts the receipts later to
Envoy's `POST /drivers/http/receipts`, with its own secret, and the account's webhook hears."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.waiting import wait_until
from tests.support.carrier_gateway import Gateway, serving_gateway
from tests.support.operator import Cli, Up, make_cli, running_up
from tests.support.webhook_receiver import Receiver, receiving

SECRET = "s3cret-of-the-gateway-0123456789"
RECEIPTS = "/drivers/http/receipts"


@dataclass
class Carrier:
    """mplus up, its account, the gateway it sends through and the account's webhook."""

    cli: Cli
    up: Up
    key: str
    gateway: Gateway
    webhook: Receiver

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.cli.http_port}{path}"

    def send(self, to: str) -> str:
        """Posts one message with a callback; answers its uuid once the gateway took it."""
        response = httpx.post(
            self.url("/message"),
            params={"key": self.key},
            json={
                "messages": [
                    {
                        "from": {"type": "custom", "value": "Acme"},
                        "to": to,
                        "body": "Hello",
                        "callback": self.webhook.url(),
                    }
                ]
            },
            timeout=10,
        )
        assert response.status_code == 200, response.text
        uuid: str = response.json()["messages"][0]["messageUuid"]
        wait_until(lambda: self.sent(uuid), "the gateway to be sent the message", timeout=20)
        return uuid

    def sent(self, uuid: str) -> bool:
        return any(body["messageuuid"] == uuid for _, body in self.gateway.received)

    def receipt(self, body: Any, authorization: str | None = f"Bearer {SECRET}") -> httpx.Response:
        headers = {"authorization": authorization} if authorization is not None else {}
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(self.url(RECEIPTS), content=content, headers=headers, timeout=10)

    def batch(self, message_uuid: str) -> dict[str, Any]:
        """The message's entry of its batch's receipts (a batch per message here)."""
        for _, body in self.gateway.received:
            if body["messageuuid"] == message_uuid:
                response = httpx.get(
                    self.url(f"/batch/{body['batchuuid']}"),
                    params={"key": self.key, "details": "true"},
                    timeout=10,
                )
                assert response.status_code == 200, response.text
                [detail] = response.json()["details"]
                return dict(detail)
        raise AssertionError(f"{message_uuid} was never sent")


@pytest.fixture(scope="module")
def carrier(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Carrier]:
    with ExitStack() as cleanup:
        gateway = cleanup.enter_context(serving_gateway())
        gateway.answer = lambda body: (
            200,
            json.dumps({"status": "accepted", "id": f"gw-{body['messageuuid']}"}).encode(),
        )
        webhook = cleanup.enter_context(receiving())
        cli = make_cli(Path(tmp_path_factory.mktemp("carrier")), None)
        cli.env |= {
            "MPLUS_CHANNEL_DRIVER": "http",
            "MPLUS_HTTP_DRIVER_URL": gateway.url,
            "MPLUS_HTTP_DRIVER_SECRET": SECRET,
            "MPLUS_DISPATCH_INTERVAL_MS": "50",
            "MPLUS_CALLBACK_ALLOW_NETWORKS": "127.0.0.0/8",
        }
        cli.ok("db", "upgrade")
        account = json.loads(cli.ok("accounts", "create", "customer", "--json"))
        up = cleanup.enter_context(running_up(cli))
        carrier = Carrier(cli, up, account["key"], gateway, webhook)
        wait_until(lambda: _serving(carrier), "mplus up to answer through Envoy", timeout=30)
        yield carrier
        up.process.terminate()
        up.process.wait(timeout=30)
        assert up.process.returncode == 0, up.output()
        assert "Traceback" not in up.output()


def _serving(carrier: Carrier) -> bool:
    if carrier.up.process.poll() is not None:
        raise AssertionError(f"mplus up exited: {carrier.up.output()}")
    try:
        return httpx.get(carrier.url("/dr-responses"), timeout=5).is_success
    except httpx.HTTPError:
        return False


def test_a_late_receipt_reaches_the_accounts_webhook_and_the_batch(carrier: Carrier) -> None:
    uuid = carrier.send("447700900301")
    assert carrier.batch(uuid)["info"] is None  # with the carrier: pending
    assert carrier.webhook.posts == []
    response = carrier.receipt({"id": f"gw-{uuid}", "code": "22"})
    assert (response.status_code, response.json()) == (200, {"matched": "part"})
    wait_until(lambda: len(carrier.webhook.posts) == 1, "the receipt webhook", timeout=20)
    posted = json.loads(carrier.webhook.posts[0].body)
    assert (posted["messageuuid"], posted["delivered"]) == (uuid, False)
    assert posted["receiptInfo"]["code"] == "22"
    assert carrier.batch(uuid)["failed"] is True
    again = carrier.receipt({"id": f"gw-{uuid}", "code": "00"})
    assert (again.status_code, again.json()) == (200, {"matched": "duplicate"})
    assert carrier.batch(uuid)["failed"] is True and len(carrier.webhook.posts) == 1


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer wrong-secret-0123456789", f"Bearer {SECRET}x", SECRET, f"Basic {SECRET}"],
)
def test_a_receipt_without_the_gateways_secret_is_refused_and_not_recorded(
    carrier: Carrier, authorization: str | None
) -> None:
    uuid = carrier.send("447700900302")
    response = carrier.receipt({"id": f"gw-{uuid}", "code": "00"}, authorization)
    assert response.status_code == 401, response.text
    assert response.json()["code"] == 16
    assert carrier.batch(uuid)["info"] is None


def test_an_account_key_is_no_gateways_secret(carrier: Carrier) -> None:
    receipt = {"id": "gw-x", "code": "00"}
    as_header = httpx.post(
        carrier.url(RECEIPTS), json=receipt, headers={"x-api-key": carrier.key}, timeout=10
    )
    assert as_header.status_code == 401, as_header.text
    in_query = httpx.post(
        carrier.url(RECEIPTS), params={"key": carrier.key}, json=receipt, timeout=10
    )
    assert in_query.status_code == 400, in_query.text  # the endpoint takes no query


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"code": "00"}, ["id"]),
        ({"id": "gw-1"}, ["code"]),
        ({"id": "x" * 65, "code": "123456789"}, ["id", "code"]),
    ],
)
def test_a_receipt_breaking_the_rules_is_a_400_naming_each_field(
    carrier: Carrier, body: dict[str, Any], fields: list[str]
) -> None:
    response = carrier.receipt(body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["code"] == 3
    [bad_request] = [d for d in error["details"] if d["@type"].endswith("BadRequest")]
    assert [v["field"] for v in bad_request["fieldViolations"]] == fields


def test_a_receipt_that_is_not_json_is_a_400_and_records_nothing(carrier: Carrier) -> None:
    uuid = carrier.send("447700900303")
    for body in (b"{not json", b'{"id": "gw-' + uuid.encode() + b'", "code": 22}'):
        response = carrier.receipt(body)
        assert response.status_code == 400, response.text
        assert response.json()["code"] == 3
    assert carrier.batch(uuid)["info"] is None


def test_a_receipt_for_an_unknown_id_is_accepted_logged_and_counted(carrier: Carrier) -> None:
    response = carrier.receipt({"id": "gw-nobody-sent-this", "code": "00"})
    assert (response.status_code, response.json()) == (200, {"matched": "nothing"})
    wait_until(lambda: "gw-nobody-sent-this" in carrier.up.output(), "the log line", timeout=10)
    metrics = httpx.get(
        f"http://127.0.0.1:{carrier.cli.env['MPLUS_METRICS_PORT']}/metrics", timeout=5
    ).text
    assert 'mplus_carrier_receipts_total{carrier="http",matched="nothing"} 1.0' in metrics
