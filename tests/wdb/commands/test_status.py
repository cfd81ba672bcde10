"""Status commands: every write goes through the status model, with its history and outbox rows."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from agentpulse.records import TransitionRow
from agentpulse.status import ConnectionStatus, StatusCode
from agentpulse.store.subscriber import Subscriber
from agentpulse.wdb.protocol import near
from tests.wdb.served import Served, history


def test_update_keepalive_moves_the_agent_through_the_status_model(served: Served) -> None:
    assert (
        served.query('global update-keepalive {"id":1,"connection_status":"pending","sync_status":"synced"}')
        == "ok"
    )
    assert (
        served.query('global update-keepalive {"id":1,"connection_status":"active","sync_status":"syncreq"}')
        == "ok"
    )
    row = served.rows(
        "SELECT connection_status, status_code, last_keepalive, sync_status FROM agent WHERE id = 1"
    )[0]
    assert (row[0], row[1], row[3]) == ("active", 0, "syncreq")
    assert abs(row[2] - time.time()) < 5
    assert history(served, 1) == [("never_connected", "pending", 0), ("pending", "active", 0)]
    assert served.store.reader().has_agent_db(1)  # created on the agent's first startup, as from remoted


def test_update_keepalive_refuses_a_status_a_keepalive_cannot_bring(served: Served) -> None:
    answer = served.query(
        'global update-keepalive {"id":1,"connection_status":"disconnected","sync_status":"synced"}'
    )
    assert answer.startswith("err Cannot execute Global database query;")
    assert history(served, 1) == []


def test_update_keepalive_with_bad_sync_status_is_the_check_error(served: Served) -> None:
    answer = served.query(
        'global update-keepalive {"id":1,"connection_status":"active","sync_status":"bogus"}'
    )
    assert answer == "err Cannot execute Global database query; CHECK constraint failed: sync_status"


@pytest.mark.parametrize(
    ("command", "argument"),
    [
        ("update-keepalive", '["id", 1]'),
        ("update-keepalive", '{"connection_status":"active","sync_status":"synced"}'),
        ("update-keepalive", '{"id":1,"connection_status":"active","sync_status":1}'),
        ("update-keepalive", '{"id":1,"sync_status":"bogus"}'),  # before the value of sync_status
        ("update-connection-status", "3"),
        ("update-connection-status", '{"id":1,"connection_status":"active","sync_status":"synced"}'),
        ("update-connection-status", '{"id":1,"status_code":0,"sync_status":"bogus"}'),
        ("update-status-code", "null"),
        ("update-status-code", '{"id":true,"status_code":6,"sync_status":"synced"}'),
        ("update-status-code", '{"id":1,"status_code":6,"version":4,"sync_status":"bogus"}'),
    ],
)
def test_a_status_command_without_its_members_is_invalid_data_and_writes_nothing(
    served: Served, command: str, argument: str
) -> None:
    assert served.query(f"global {command} {argument}") == f"err Invalid JSON data, near '{near(argument)}'"
    assert history(served, 1) == []


def test_update_connection_status_shutdown_is_code_3_with_disconnection_time(served: Served) -> None:
    served.query('global update-keepalive {"id":2,"connection_status":"active","sync_status":"synced"}')
    answer = served.query(
        'global update-connection-status {"id":2,"connection_status":"disconnected","sync_status":"synced","status_code":3}'
    )
    assert answer == "ok"
    row = served.rows("SELECT connection_status, status_code, disconnection_time FROM agent WHERE id = 2")[0]
    assert (row[0], row[1]) == ("disconnected", 3)
    assert row[2] > 0
    assert history(served, 2)[-1] == ("active", "disconnected", 3)


def test_update_connection_status_outside_the_model_is_refused(served: Served) -> None:
    answer = served.query(
        'global update-connection-status {"id":2,"connection_status":"disconnected","sync_status":"synced","status_code":0}'
    )
    assert answer.startswith("err Cannot execute Global database query; the status model has no transition")


def test_update_status_code_keeps_the_status_and_sets_code_and_version(served: Served) -> None:
    answer = served.query(
        'global update-status-code {"id":3,"status_code":1,"version":"Wazuh v9.9.9","sync_status":"synced"}'
    )
    assert answer == "ok"
    row = served.rows("SELECT connection_status, status_code, version FROM agent WHERE id = 3")[0]
    assert tuple(row) == ("never_connected", 1, "Wazuh v9.9.9")
    assert history(served, 3) == [("never_connected", "never_connected", 1)]


def test_disconnect_agents_lists_and_disconnects_the_silent_live_ones(served: Served) -> None:
    for agent_id in (1, 3):
        served.query(
            f'global update-keepalive {{"id":{agent_id},"connection_status":"active","sync_status":"synced"}}'
        )
    answer = served.query(f"global disconnect-agents 0 {int(time.time()) + 100} synced")
    assert answer == 'ok [{"id":1},{"id":3}]'
    assert served.rows("SELECT status_code FROM agent WHERE id = 3")[0][0] == StatusCode.NO_KEEPALIVE
    assert served.query(f"global disconnect-agents 0 {int(time.time()) + 100} synced") == "ok []"


def test_reset_agents_connection_is_code_5_for_live_agents(served: Served) -> None:
    served.query('global update-keepalive {"id":4,"connection_status":"pending","sync_status":"synced"}')
    assert served.query("global reset-agents-connection synced") == "ok"
    assert history(served, 4)[-1] == ("pending", "disconnected", 5)
    assert served.rows("SELECT connection_status FROM agent WHERE id = 5")[0][0] == "never_connected"


def test_every_socket_transition_has_its_outbox_row_in_the_same_commit(tmp_path: Path) -> None:
    served = Served(tmp_path / "ossec")
    served.store.subscribe(
        Subscriber(
            outbox_encoder=lambda row: (f"agent.status.{row.agent_id}", f"{row.agent_id}:{row.seq}", b"{}")
        )
    )
    try:
        served.query('global update-keepalive {"id":1,"connection_status":"pending","sync_status":"synced"}')
        served.query('global update-status-code {"id":1,"status_code":2,"sync_status":"synced"}')
        served.query("global delete-agent 2")
        ids = sorted(row[0] for row in served.rows("SELECT msg_id FROM event_outbox"))
        history_ids = sorted(
            f"{r[0]}:{r[1]}" for r in served.rows("SELECT agent_id, seq FROM agent_status_history")
        )
        assert ids == history_ids == ["1:1", "1:2", "2:1"]
    finally:
        served.close()


def test_store_listeners_see_socket_transitions(served: Served) -> None:
    seen: list[TransitionRow] = []
    served.on_loop(lambda: served.store.subscribe(Subscriber(on_transition=seen.append)))
    served.query('global update-keepalive {"id":5,"connection_status":"pending","sync_status":"synced"}')
    assert [(r.agent_id, r.to_status) for r in seen] == [(5, ConnectionStatus.PENDING)]
