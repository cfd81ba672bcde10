"""Agent-row commands: reads (NULL columns left out, paging under the response cap), insert and delete."""

from __future__ import annotations

import json
import time
from pathlib import Path

from agentpulse.records import StatusUpdate
from agentpulse.status import Trigger
from agentpulse.wdb.protocol import WDB_MAX_RESPONSE_SIZE
from tests.wdb.served import Served, history


def test_get_agent_info_leaves_null_columns_out(served: Served) -> None:
    (agent,) = json.loads(served.query("global get-agent-info 1").removeprefix("ok "))
    assert agent["id"] == 1
    assert agent["name"] == "agent-00001"
    assert agent["connection_status"] == "never_connected"
    assert "ip" not in agent and "os_name" not in agent and "last_keepalive" not in agent


def test_get_agent_info_of_unknown_agent_is_an_empty_list(served: Served) -> None:
    assert served.query("global get-agent-info 404") == "ok []"


def test_get_all_agents_from_minus_one_includes_the_manager(served: Served) -> None:
    assert (
        served.query("global get-all-agents last_id -1")
        == 'ok [{"id":0},{"id":1},{"id":2},{"id":3},{"id":4},{"id":5}]'
    )
    assert served.query("global get-all-agents last_id 3") == 'ok [{"id":4},{"id":5}]'
    assert served.query("global get-all-agents context") == "ok []"


def test_get_all_agents_pages_with_due_under_the_response_cap(tmp_path: Path) -> None:
    served = Served(tmp_path / "ossec", agents=10_000)
    try:
        with served.client() as client:
            seen: list[int] = []
            last, pages = 0, []
            for _ in range(100):
                answer = client.query(f"global get-all-agents last_id {last}")
                status, _, payload = answer.partition(" ")
                assert len(answer.encode()) <= WDB_MAX_RESPONSE_SIZE + 4
                ids = [row["id"] for row in json.loads(payload)]
                seen.extend(ids)
                pages.append(status)
                if status == "ok":
                    break
                last = ids[-1]
        assert seen == list(range(1, 10_001))
        assert pages[-1] == "ok" and set(pages[:-1]) == {"due"} and len(pages) >= 2
    finally:
        served.close()


def test_get_agents_by_connection_status_with_node_and_limit(served: Served) -> None:
    served.on_loop(lambda: served.store.submit(StatusUpdate(2, Trigger.STARTUP, time.time())))
    served.on_loop(lambda: served.store.submit(StatusUpdate(4, Trigger.STARTUP, time.time())))
    served.store.flush_wait()
    assert served.query("global get-agents-by-connection-status 0 pending") == 'ok [{"id":2},{"id":4}]'
    assert served.query("global get-agents-by-connection-status 2 pending") == 'ok [{"id":4}]'
    assert (
        served.query("global get-agents-by-connection-status 0 never_connected unknown 2")
        == 'ok [{"id":1},{"id":3}]'
    )
    assert (
        served.query("global get-agents-by-connection-status 0 pending node01")
        == "err Invalid arguments 'limit' not found"
    )


def test_select_name_group_find_agent_and_labels(served: Served) -> None:
    assert served.query("global select-agent-group 1") == 'ok [{"group":"default"}]'
    assert served.query('global find-agent {"name":"agent-00003","ip":"any"}') == 'ok [{"id":3}]'
    assert served.query('global find-agent {"name":"agent-00003","ip":"10.0.0.1"}') == "ok []"
    assert (
        served.query('global find-agent {"name":"agent-00003"}')
        == 'err Invalid JSON data, near \'{"name":"agent-00003"}\''
    )
    assert served.query("global find-agent []") == "err Invalid JSON data, near '[]'"
    assert served.query("global get-labels 1") == "ok []"


def test_get_labels_lists_what_the_keepalive_wrote(served: Served) -> None:
    from tests.store.test_facade import KEEPALIVE

    served.on_loop(
        lambda: served.store.submit(StatusUpdate(1, Trigger.ALIVE, time.time(), keepalive=KEEPALIVE))
    )
    served.store.flush_wait()
    labels = json.loads(served.query("global get-labels 1").removeprefix("ok "))
    assert {"id": 1, "key": '"env"', "value": "prod"} in labels
    assert {"id": 1, "key": '#"_node_name"', "value": "node01"} in labels


def test_insert_agent_then_duplicate_is_the_unique_error(served: Served) -> None:
    request = 'global insert-agent {"id":77,"name":"late","ip":"10.1.1.1","register_ip":"any","internal_key":"k","date_add":1700000000}'
    assert served.query(request) == "ok"
    (agent,) = json.loads(served.query("global get-agent-info 77").removeprefix("ok "))
    assert agent["name"] == "late" and agent["connection_status"] == "never_connected"
    assert "group" not in agent  # no group given: NULL, as Wazuh's insert binds it
    assert (
        served.query(request)
        == "err Cannot execute Global database query; UNIQUE constraint failed: agent.id"
    )
    assert (
        served.query('global update-keepalive {"id":77,"connection_status":"pending","sync_status":"synced"}')
        == "ok"
    )
    assert history(served, 77) == [("never_connected", "pending", 0)]


def test_insert_agent_with_groups_fills_belongs_in_priority_order(served: Served) -> None:
    assert served.query('global insert-agent {"id":78,"name":"g","date_add":1,"group":"web,db"}') == "ok"
    assert served.query("global select-group-belong 78") == 'ok ["web","db"]'
    assert served.query("global select-agent-group 78") == 'ok [{"group":"web,db"}]'


def test_delete_agent_removes_the_row_and_records_a_removal(served: Served) -> None:
    served.query('global update-keepalive {"id":2,"connection_status":"active","sync_status":"synced"}')
    assert served.query("global delete-agent 2") == "ok"
    assert served.query("global get-agent-info 2") == "ok []"
    assert served.rows("SELECT COUNT(*) FROM belongs WHERE id_agent = 2")[0][0] == 0
    assert history(served, 2)[-1] == ("active", "disconnected", 0)
    assert served.query("global delete-agent 0") == "err Error deleting agent from agent table in global.db."
