"""The e2e tests' own fixtures; the stack fixture they share with the reliability suite is
in tests/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from tests.support.stack import Stack


@pytest.fixture
def channel(stack: Stack) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(stack.grpc_target) as channel:
        yield channel
