"""Fixtures for the events tests: a real nats-server (JetStream, loopback, a tmp store) and a real manager."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import ManagerProcess
from tests.events.natsserver import NatsServer


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "nats" / "store")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[ManagerProcess]:
    process = ManagerProcess(tmp_path / "ossec")
    try:
        yield process
    finally:
        process.stop()
