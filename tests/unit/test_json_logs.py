"""Log records become one JSON object a line, with a record's fields at the top level."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator

import pytest

from server.json_logs import FIELDS, JsonFormatter, log_json_lines


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("server.test", logging.WARNING, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def test_a_record_is_one_line_of_json_with_time_level_logger_message_and_fields() -> None:
    formatted = JsonFormatter().format(
        record("two\nlines %s", "here", **{FIELDS: {"account_id": "a1", "messages": 3}})
    )
    assert "\n" not in formatted
    line = json.loads(formatted)
    assert line.pop("time").endswith("Z")
    assert line == {
        "level": "WARNING",
        "logger": "server.test",
        "message": "two\nlines here",
        "account_id": "a1",
        "messages": 3,
    }


def test_an_exception_is_kept_as_text_in_the_same_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        failed = record("failed")
        failed.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter().format(failed))
    assert line["message"] == "failed"
    assert "RuntimeError: boom" in line["exception"]


@pytest.fixture
def restored_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("restored_root")
def test_log_json_lines_sends_every_logger_to_the_stream_as_json() -> None:
    stream = io.StringIO()
    log_json_lines(stream)
    logging.getLogger("server.anything").info("started on %s", "127.0.0.1:1")
    logging.getLogger("server.anything").debug("not at INFO")
    lines = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert [(line["logger"], line["message"]) for line in lines] == [
        ("server.anything", "started on 127.0.0.1:1")
    ]
