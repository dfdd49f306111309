"""A real local webhook receiver for tests: records raw posts, answers as the test scripts it."""

from __future__ import annotations

import ssl
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

Answer = Literal["200", "500", "302", "hang", "close"]
"""What the receiver does with a post: answer 200, 500 or a 302 to another path, never answer
(until the receiver stops), or close the connection without a word."""


@dataclass(frozen=True)
class Post:
    path: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes


class Receiver:
    """Answers each post with the next scripted answer, then with `default`."""

    def __init__(self, port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        self.posts: list[Post] = []
        self.connections = 0
        self.default: Answer = "200"
        self._script: deque[Answer] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", port), _handler(self))
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str = "/dr", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def answer(self, *answers: Answer) -> None:
        """The next posts' answers, in order."""
        with self._lock:
            self._script.extend(answers)

    def next_answer(self, post: Post) -> Answer:
        with self._lock:
            self.posts.append(post)
            return self._script.popleft() if self._script else self.default

    def connected(self) -> None:
        with self._lock:
            self.connections += 1

    def hang(self) -> None:
        self._stopping.wait(30)

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@contextmanager
def receiving(port: int = 0, tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    receiver = Receiver(port, tls).start()
    try:
        yield receiver
    finally:
        receiver.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    """Several senders' posts at once: the default backlog of 5 drops the rest's SYNs, which
    then wait a second to try again."""


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def setup(self) -> None:
            receiver.connected()
            super().setup()

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            if len(body) < length:
                # The sender died mid-request (a test's kill -9): no post reached us, and
                # a real receiver would never see it as one.
                self.close_connection = True
                return
            headers = {name.lower(): value for name, value in self.headers.items()}
            answer = receiver.next_answer(Post(self.path, headers, body))
            if answer == "hang":
                receiver.hang()
                return
            if answer == "close":
                self.close_connection = True
                return
            status = {"200": 200, "500": 500, "302": 302}[answer]
            self.send_response(status)
            if status == 302:
                self.send_header("location", "/elsewhere")
            reply = b"ok" if status == 200 else b"receiver says no\x00\n" + b"x" * 5000
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: the test reads `posts`

    return Handler
