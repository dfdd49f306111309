"""Loopback ports nothing listens on, never handed out twice in one run."""

from __future__ import annotations

import socket

_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, never the same twice in this run (the kernel may repeat)."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def consecutive_free_ports(count: int) -> int:
    """The first of `count` consecutive ports nothing listens on (for `mplus up --workers`)."""
    while True:
        base = free_port()
        ports = range(base + 1, base + count)
        free = base + count <= 65536 and all(_bindable(p) for p in ports)
        if free and not _handed_out.intersection(ports):
            _handed_out.update(ports)
            return base


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
