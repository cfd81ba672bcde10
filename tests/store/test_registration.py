"""What enrolment asks of the store: a registered agent (groups, date_add, register_ip) with its first
history row and status event, a replaced agent's removal row saying why, and the facts the replacement
rules read (date_add, disconnection_time) kept in the view."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentpulse.records import StatusUpdate, TransitionRow
from agentpulse.status import ConnectionStatus, RowReason, StatusCode, Trigger
from agentpulse.store.batch import InsertedAgent
from agentpulse.store.facade import Store
from agentpulse.store.subscriber import Subscriber
from tests.store.databases import Database, read
from tests.store.test_facade import Clock

NEVER = ConnectionStatus.NEVER_CONNECTED


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock, database: Database) -> Iterator[Store]:
    store = Store(
        tmp_path / "db",
        backend=database.backend(tmp_path / "db"),
        manager_host="mgr",
        node_name="node01",
        flush_interval=0.05,
        clock=clock.wall,
        monotonic=clock.monotonic,
    )
    store.open([])
    yield store
    store.close()


def enrolled(agent_id: int, groups: tuple[str, ...] = ("default",), at: int = 1_700_000_000) -> InsertedAgent:
    return InsertedAgent(agent_id, f"web-{agent_id:02d}", None, "any", f"key{agent_id}", groups, at)


def test_a_registered_agent_is_never_connected_with_its_groups_date_and_address(store: Store) -> None:
    store.register_agents([enrolled(1, ("linux", "default"))], 1_700_000_000.5)
    assert store.flush_wait()
    row = read(
        store,
        "SELECT name, register_ip, internal_key, date_add, connection_status, `group` FROM agent WHERE id = 1",
    )[0]
    assert tuple(row) == ("web-01", "any", "key1", 1_700_000_000, "never_connected", "linux,default")
    groups = read(
        store,
        "SELECT g.name FROM belongs b JOIN `group` g ON g.id = b.id_group WHERE b.id_agent = 1 ORDER BY b.priority",
    )
    assert [g[0] for g in groups] == ["linux", "default"]


def test_registration_is_the_first_history_row_never_connected_to_never_connected_code_0(
    store: Store,
) -> None:
    seen: list[TransitionRow] = []
    store.subscribe(Subscriber(on_transition=seen.append))
    (row,) = store.register_agents([enrolled(1)], 1_700_000_000.5)
    assert row == TransitionRow(
        1, 1, NEVER, NEVER, StatusCode.NONE, 1_700_000_000.5, None, RowReason.REGISTERED
    )
    assert seen == [row]
    assert store.flush_wait()
    history = read(store, "SELECT seq, from_status, to_status, status_code FROM agent_status_history")
    assert [tuple(h) for h in history] == [(1, "never_connected", "never_connected", 0)]
    (startup,) = [store.submit(StatusUpdate(1, Trigger.STARTUP, 1_700_000_001))]
    assert startup is not None and startup.seq == 2


def test_the_status_event_of_a_registration_says_registered(store: Store) -> None:
    def encode(row: TransitionRow) -> tuple[str, str, bytes]:
        from agentpulse.events.payloads import Origin, outbox_row

        return outbox_row("agent", row, "web-01", Origin("node01", "mgr"))

    store.subscribe(Subscriber(outbox_encoder=encode))
    store.register_agents([enrolled(1)], 1_700_000_000.5)
    assert store.flush_wait()
    subject, msg_id, payload = read(store, "SELECT subject, msg_id, payload FROM event_outbox")[0]
    event = json.loads(payload)
    assert (subject, msg_id) == ("agent.status.001", "001:1")
    assert (event["previous"], event["status"], event["status_code"], event["reason"]) == (
        "never_connected",
        "never_connected",
        0,
        "registered",
    )


def test_an_agent_already_known_is_not_registered_again(store: Store) -> None:
    assert len(store.register_agents([enrolled(1)], 1.0)) == 1
    assert store.register_agents([enrolled(1), enrolled(0)], 2.0) == []


def test_a_replaced_agent_leaves_with_a_removal_row_that_says_why(store: Store) -> None:
    store.register_agents([enrolled(1)], 1_700_000_000.0)
    (row,) = store.remove_agents([1], 1_700_000_100.0, purge_files=True, reason=RowReason.REPLACED)
    assert (row.from_status, row.to_status, row.code, row.reason) == (
        NEVER,
        ConnectionStatus.DISCONNECTED,
        StatusCode.NONE,
        RowReason.REPLACED,
    )
    assert store.flush_wait()
    assert read(store, "SELECT COUNT(*) FROM agent WHERE id = 1")[0][0] == 0
    assert len(read(store, "SELECT * FROM agent_status_history WHERE agent_id = 1")) == 2


def test_the_view_keeps_date_add_and_disconnection_time_as_the_database_has_them(
    store: Store, tmp_path: Path, clock: Clock, database: Database
) -> None:
    store.register_agents([enrolled(1, at=1_600_000_000)], 1_600_000_000.0)
    store.submit(StatusUpdate(1, Trigger.STARTUP, 1_700_000_001))
    assert store.agents[1].disconnection_time == 0.0
    store.submit(StatusUpdate(1, Trigger.SHUTDOWN, 1_700_000_002))
    view = store.agents[1]
    assert (view.date_add, view.disconnection_time) == (1_600_000_000, 1_700_000_002)
    store.close()
    again = Store(
        tmp_path / "db",
        manager_host="mgr",
        node_name="node01",
        clock=clock.wall,
        backend=database.backend(tmp_path / "db"),
    )
    again.open([])
    try:
        loaded = again.agents[1]
        assert (loaded.status, loaded.date_add, loaded.disconnection_time) == (
            ConnectionStatus.DISCONNECTED,
            1_600_000_000,
            1_700_000_002,
        )
    finally:
        again.close()
