"""Shared fixtures: the Wazuh 4.x test vectors that are our contract, and a real manager process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import pgserver
from tests.e2e.harness import ManagerProcess, stop_leftovers
from tests.pgserver import PostgresServer

VECTORS = Path(__file__).resolve().parent / "data" / "reference" / "vectors.json"


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS.read_text())
    return data


@pytest.fixture(autouse=True)
def _no_manager_outlives_its_test() -> Iterator[None]:
    yield
    stop_leftovers()


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[ManagerProcess]:
    """A manager in tmp_path/ossec, not started: the test sets it up and starts it; stopped at the end."""
    process = ManagerProcess(tmp_path / "ossec")
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL for the session (initdb as the postgres user, a free port, removed after)."""
    why = pgserver.available()
    if why is not None:
        pytest.skip(f"no PostgreSQL for the tests: {why}")
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()
