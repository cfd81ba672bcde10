"""The cluster tests' database: a fresh, empty database for each test on the suite's one throwaway
PostgreSQL (the session fixture `postgres` of tests/conftest.py, tests/pgserver.py)."""

from __future__ import annotations

import uuid

import pytest

from tests.pgserver import PostgresServer


@pytest.fixture
def dsn(postgres: PostgresServer) -> str:
    """A new, empty database of its own for each test."""
    return postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
