"""PostgreSQL stopped under load (pg_ctl stop, then start): submit never waits, the writer holds the status
changes, says so once, and after the restart writes every one of them (history and outbox complete)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentpulse.records import StatusUpdate, TransitionRow
from agentpulse.status import Trigger
from agentpulse.store.facade import Store
from agentpulse.store.postgresql.backend import PostgresBackend
from agentpulse.store.subscriber import Subscriber
from agentpulse.wire.keys import KeysFile
from tests import pgserver
from tests.pgserver import PostgresServer
from tests.store.databases import read
from tests.store.test_facade import KEEPALIVE

AGENTS = 200
OUTAGE = 3.0  # seconds PostgreSQL is down (the e2e asks 20 s; the writer's logic is the same)


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    """A server of its own: this test stops and starts it."""
    why = pgserver.available()
    if why is not None:
        pytest.skip(f"no PostgreSQL for the tests: {why}")
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def encode(row: TransitionRow) -> tuple[str, str, bytes]:
    return ("agent.status", f"{row.agent_id:03d}:{row.seq}", b"{}")


def test_postgresql_stopped_under_load_loses_nothing(
    server: PostgresServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "agentpulse.store")
    keys = KeysFile.parse("".join(f"{n:03d} a{n} any k{n}\n" for n in range(1, AGENTS + 1)))
    backend = PostgresBackend(server.dsn(), manager_host="m", node_name="n")
    store = Store(tmp_path, manager_host="m", node_name="n", flush_interval=0.1, backend=backend)
    store.subscribe(Subscriber(outbox_encoder=encode))
    store.open(list(keys.active()))
    try:
        now = 1_700_000_000.0
        for agent_id in range(1, AGENTS + 1):
            store.submit(StatusUpdate(agent_id, Trigger.STARTUP, now))
        assert store.flush_wait()
        server.pause()
        slowest = 0.0
        stop_at = time.monotonic() + OUTAGE
        rounds = 0
        while time.monotonic() < stop_at and rounds < 1000:  # keep-alives and changes keep coming
            rounds += 1
            now += 1
            for agent_id in range(1, AGENTS + 1):
                started = time.perf_counter()
                trigger = Trigger.ALIVE if rounds % 2 else Trigger.SHUTDOWN
                store.submit(StatusUpdate(agent_id, trigger, now, keepalive=KEEPALIVE))
                slowest = max(slowest, time.perf_counter() - started)
            time.sleep(0.1)
        assert store.write_errors >= 1
        server.resume()
        assert store.flush_wait(30)
    finally:
        store.close()
    # submit never waited on the database (that would be the outage's seconds); a loaded 2-core machine
    # running the whole suite has shown 60 ms from the GIL and the writer's lock alone
    assert slowest < 0.25
    expected = AGENTS * (1 + rounds)  # the startup row, then one transition per round
    assert read(store, "SELECT COUNT(*) FROM agent_status_history")[0][0] == expected
    assert read(store, "SELECT COUNT(*) FROM event_outbox")[0][0] == expected
    last = "active" if rounds % 2 else "disconnected"
    assert (
        read(store, "SELECT COUNT(*) FROM agent WHERE id > 0 AND connection_status = ?", last)[0][0] == AGENTS
    )
    messages = [record.getMessage() for record in caplog.records]
    assert sum("holding status changes in memory" in m for m in messages) == 1
    assert sum("work again" in m for m in messages) == 1
