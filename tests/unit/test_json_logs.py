"""Log records become one JSON object a line, with a record's fields at the top level."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from server.json_logs import (
    ATOMIC_WRITE_BYTES,
    FIELDS,
    WRITE_EVERY_S,
    BackgroundLines,
    JsonFormatter,
    log_json_lines,
)


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
    logging.getLogger().handlers[0].flush()
    lines = [json.loads(text) for text in stream.getvalue().splitlines()]
    assert [(line["logger"], line["message"]) for line in lines] == [
        ("server.anything", "started on 127.0.0.1:1")
    ]


class Writes(io.StringIO):
    """A stream that keeps each write call's text apart."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


def background_logger(stream: io.StringIO) -> tuple[logging.Logger, BackgroundLines]:
    handler = BackgroundLines(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(f"test.background.{id(handler)}")
    logger.propagate, logger.level = False, logging.INFO
    logger.addHandler(handler)
    return logger, handler


def test_lines_from_many_threads_are_written_whole_in_few_writes_within_the_period() -> None:
    stream = Writes()
    logger, handler = background_logger(stream)

    def log_lines(n: int) -> None:
        for i in range(250):
            logger.info("t%d line %d", n, i, extra={FIELDS: {"pad": "x" * 200}})

    threads = [threading.Thread(target=log_lines, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    deadline = time.monotonic() + WRITE_EVERY_S * 20
    while stream.getvalue().count("\n") < 2000 and time.monotonic() < deadline:
        time.sleep(WRITE_EVERY_S / 5)
    lines = stream.getvalue().splitlines()
    assert sorted(json.loads(line)["message"] for line in lines) == sorted(
        f"t{n} line {i}" for n in range(8) for i in range(250)
    )
    assert all(len(call) <= ATOMIC_WRITE_BYTES and call.endswith("\n") for call in stream.calls)
    assert len(stream.calls) < 2000 / 10  # about 15 lines of 270 bytes a write
    handler.close()


def test_flush_returns_with_every_line_written_and_close_writes_the_rest() -> None:
    stream = Writes()
    logger, handler = background_logger(stream)
    logger.info("first")
    handler.flush()
    assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == ["first"]
    logger.info("second")
    handler.close()  # as logging.shutdown() does at exit, without waiting for the period
    assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == [
        "first",
        "second",
    ]


def test_a_broken_write_loses_its_lines_but_not_the_writer() -> None:
    class BrokenOnce(Writes):
        def write(self, text: str) -> int:
            if not self.calls:
                self.calls.append("")
                raise OSError("broken pipe")
            return super().write(text)

    stream = BrokenOnce()
    logger, handler = background_logger(stream)
    logger.info("lost")
    handler.flush()
    logger.info("written")
    handler.flush()
    assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == ["written"]
    handler.close()


def test_a_line_logged_after_close_is_written_at_once() -> None:
    stream = Writes()
    logger, handler = background_logger(stream)
    handler.close()  # logging.shutdown() at exit, while a daemon thread still logs
    logger.info("after close")
    assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == [
        "after close"
    ]


def test_flush_after_close_writes_what_is_queued_without_waiting() -> None:
    stream = Writes()
    logger, handler = background_logger(stream)
    handler.close()
    started = time.monotonic()
    for _ in range(5):
        logger.info("after close")
        handler.flush()
    assert time.monotonic() - started < 0.4  # it waited 0.1 s a flush for a stopped writer
    assert stream.getvalue().count("after close") == 5
