"""A throwaway PostgreSQL for the cluster tests (one server per session, a fresh database per test),
started with initdb/pg_ctl as the postgres user and removed after; skipped with the reason where the
binaries or the user are missing."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from agentpulse.cluster.localpg import LocalPostgres, unavailable


@pytest.fixture(scope="session")
def postgres() -> Iterator[LocalPostgres]:
    why = unavailable()
    if why is not None:
        pytest.skip(f"no throwaway PostgreSQL: {why}")
    server = LocalPostgres(Path(tempfile.mkdtemp(prefix="agentpulse-cluster-pg-")))
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def dsn(postgres: LocalPostgres) -> str:
    """A new, empty database of its own for each test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return postgres.dsn_for(name)
