"""`mplus dispatch` as an operator runs it, against a carrier gateway the test holds back: its
/metrics over HTTP show the backlog while the carrier stalls, then every send, finished message
and receipt post; its stderr holds one JSON line per finished message, and no body or number."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from harness.ports import free_port
from harness.waiting import wait_until
from server.config import Limits
from server.domain.model import MessageDraft, SenderDraft
from server.processes import stop_process
from server.service import accounts
from server.service.add_messages import AddMessages, AddMessagesCommand
from server.storage.database import create_database_engine
from server.storage.migrate import upgrade
from server.storage.unit_of_work import UnitOfWork
from tests.support.carrier_gateway import serving_gateway
from tests.support.metrics import Samples, labels, scrape
from tests.support.webhook_receiver import receiving

BODY = "dispatch metrics body 41c7"
NUMBERS = ("447700900011", "447700900012", "447700900013")


ACCEPTED = b'{"status": "accepted", "code": "00"}'
"""The gateway's answer: delivered, final at once."""


def test_mplus_dispatch_serves_its_backlog_and_counts_over_http(tmp_path: Path) -> None:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'mplus.db'}")
    upgrade(engine)
    key = accounts.create_account(lambda: UnitOfWork(engine), "dispatch-metrics").key
    released = threading.Event()  # the carrier stalls every send until the test lets go

    def stalled_answer(_send: dict[str, object]) -> tuple[int, bytes]:
        released.wait(timeout=60)
        return 200, ACCEPTED

    with receiving() as receiver, serving_gateway() as carrier:
        carrier.answer = stalled_answer
        loopback = Limits(callback_allow_networks=("127.0.0.0/8",))
        add = AddMessages(lambda: UnitOfWork(engine), loopback)
        drafts = [
            MessageDraft(to=number, sender=SenderDraft("custom", "Acme"), body=BODY)
            for number in NUMBERS
        ]
        defaults = MessageDraft(callback=receiver.url())
        queued = add(AddMessagesCommand(key, drafts, defaults=defaults))
        engine.dispose()

        metrics_port = free_port()
        env = {name: value for name, value in os.environ.items() if not name.startswith("MPLUS_")}
        env |= {
            "MPLUS_STATE_DIR": str(tmp_path),
            "MPLUS_DISPATCH_METRICS_PORT": str(metrics_port),
            "MPLUS_DISPATCH_BATCH": "1",  # one message with the stalled carrier, two waiting
            "MPLUS_DISPATCH_INTERVAL_MS": "50",
            "MPLUS_CHANNEL_DRIVER": "http",
            "MPLUS_HTTP_DRIVER_SECRET": "a-gateway-secret-0123456789",
            "MPLUS_HTTP_DRIVER_URL": carrier.url,
            "MPLUS_HTTP_DRIVER_TIMEOUT_MS": "60000",
            "MPLUS_CALLBACK_ALLOW_NETWORKS": "127.0.0.0/8",
        }
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        stderr = tmp_path / "stderr.log"
        with stderr.open("wb") as sink:
            dispatch = subprocess.Popen(
                [sys.executable, "-m", "server.cli", "dispatch"], env=env, stderr=sink
            )
        try:
            wait_until(lambda: len(carrier.received) == 1, "the first send to reach the carrier")
            stalled: list[Samples] = []

            def backlog_of_two() -> bool:
                stalled.append(scrape(url))
                return stalled[-1][("mplus_dispatch_backlog_messages", labels())] == 2

            wait_until(backlog_of_two, "the backlog gauge to read 2", timeout=30)
            oldest = stalled[-1][("mplus_dispatch_backlog_oldest_seconds", labels())]
            assert 0 < oldest < 120
            sends = ("mplus_dispatch_sends_total", labels(channel="sms", outcome="accepted"))
            assert stalled[-1][sends] == 0

            released.set()
            done: list[Samples] = []

            def all_counted() -> bool:
                done.append(scrape(url))
                now = done[-1]
                return (
                    now[("mplus_webhook_posts_total", labels(result="delivered"))] == 3
                    and now[("mplus_dispatch_backlog_messages", labels())] == 0
                    and now[("mplus_webhook_receipts_pending", labels())] == 0
                )

            wait_until(all_counted, "every message sent, finished and reported", timeout=30)
            after = done[-1]
            assert after[sends] == 3
            assert after[("mplus_dispatch_send_duration_seconds_count", labels(channel="sms"))] == 3
            finished = ("mplus_messages_finished_total", labels(status="delivered", code="00"))
            assert after[finished] == 3
            assert after[("mplus_webhook_post_duration_seconds_count", labels())] == 3
            assert after[("mplus_dispatch_backlog_oldest_seconds", labels())] == 0
            assert after[("mplus_dispatch_backlog_read_timestamp_seconds", labels())] > 0
            assert len(receiver.posts) == 3

            dispatch.send_signal(signal.SIGTERM)
            assert dispatch.wait(timeout=20) == 0
        finally:
            released.set()
            stop_process(dispatch)

    text = stderr.read_text()
    assert BODY not in text and key not in text
    assert not any(number in text for number in NUMBERS)
    logged = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    (started,) = [e for e in logged if e["message"].startswith("dispatching with")]
    assert started["metrics_port"] == metrics_port
    batches = {m.message_uuid: m.batch_uuid for m in queued}
    finished_lines = [e for e in logged if e["message"] == "message delivered"]
    assert {e["message_uuid"]: e["batch_uuid"] for e in finished_lines} == batches
    assert len(finished_lines) == 3  # one each
    for entry in finished_lines:
        assert (entry["channel"], entry["code"], entry["attempts"]) == ("sms", "00", 1)
    posted = [e for e in logged if e["message"] == "webhook delivered"]
    assert {e["message_uuid"]: e["batch_uuid"] for e in posted} == batches
    assert len(posted) == 3
    assert logged[-1]["message"] == "dispatcher stopped"
