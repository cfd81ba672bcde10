"""Fixtures for the events tests: a real nats-server (JetStream, loopback, a tmp store)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.events.natsserver import NatsServer


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats" / "store")
    server.start()
    try:
        yield server
    finally:
        server.stop()
