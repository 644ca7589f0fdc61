"""Fixtures of the SDK's tests: the fault-injecting server and clients pointed at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import autoglm
import pytest
from faultserver import FaultServer, client_options


@pytest.fixture
def server() -> Iterator[FaultServer]:
    fault = FaultServer().start()
    yield fault
    fault.stop()


@pytest.fixture
def make_client(server: FaultServer) -> Iterator[Callable[..., autoglm.AutoGLMClient]]:
    """Build clients on the fault server, with short backoff unless told otherwise."""
    clients: list[autoglm.AutoGLMClient] = []

    def make(**kwargs: Any) -> autoglm.AutoGLMClient:
        client = autoglm.AutoGLMClient(**client_options(server, **kwargs))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: Callable[..., autoglm.AutoGLMClient]) -> autoglm.AutoGLMClient:
    return make_client()
