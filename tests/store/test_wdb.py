"""The query socket against a real store: framing, Wazuh's answers and errors, writes through the status
model, paging, and the guards against bad or slow clients."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentpulse.records import StatusUpdate, TransitionRow
from agentpulse.status import ConnectionStatus, StatusCode, Trigger
from agentpulse.store.subscriber import Subscriber
from agentpulse.store.wdb import (
    HEADER,
    OS_MAXSTR,
    WDB_MAX_RESPONSE_SIZE,
    page,
    run_read_only_sql,
    split_request,
)
from agentpulse.wire.control import FORCE_RECONNECT
from tests.store.served import Served, frame, read_answer


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    served = Served(tmp_path / "ossec", frame_timeout=0.3, idle_timeout=5, sql_time_limit=1.5)
    try:
        yield served
    finally:
        served.close()


def history(served: Served, agent_id: int) -> list[tuple[str, str, int]]:
    return [
        (row[0], row[1], row[2])
        for row in served.rows(
            "SELECT from_status, to_status, status_code FROM agent_status_history WHERE agent_id = ? ORDER BY seq",
            agent_id,
        )
    ]


# -- framing -------------------------------------------------------------------------------------------


def test_raw_frame_without_nul_gets_a_framed_answer_without_nul(served: Served) -> None:
    with served.raw() as sock:
        sock.sendall(frame(b"global select-agent-name 1"))
        assert read_answer(sock) == b'ok [{"name":"agent-00001"}]'


def test_trailing_nul_of_the_c_client_is_accepted(served: Served) -> None:
    with served.raw() as sock:
        sock.sendall(frame(b"global select-agent-name 1\0"))
        assert read_answer(sock) == b'ok [{"name":"agent-00001"}]'


def test_request_ending_in_newline_gets_an_answer_ending_in_newline(served: Served) -> None:
    with served.raw() as sock:
        sock.sendall(frame(b"global select-agent-name 2\n"))
        assert read_answer(sock) == b'ok [{"name":"agent-00002"}]\n'
        sock.sendall(frame(b"global nope\n"))
        assert read_answer(sock) == b"err Invalid DB query syntax, near 'nope'\n"


def test_leading_spaces_and_newlines_are_skipped(served: Served) -> None:
    assert served.query(" \n global select-agent-name 3") == 'ok [{"name":"agent-00003"}]'


def test_several_requests_on_one_connection(served: Served) -> None:
    with served.client() as client:
        for agent_id in (1, 2, 3):
            assert (
                client.query(f"global select-agent-name {agent_id}")
                == f'ok [{{"name":"agent-{agent_id:05d}"}}]'
            )


def test_split_request_rules() -> None:
    assert split_request(b"global x\n\0") == ("global x", True)
    assert split_request(b"global x\0junk") == ("global x", False)
    assert split_request(b"global x") == ("global x", False)


# -- malformed input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_text", "answer"),
    [
        ("global", "err Invalid DB query syntax, near 'global'"),
        ("globalselect-groups", "err Invalid DB query syntax, near 'globalselect-groups'"),
        ("teleport now", "err Invalid DB query actor: 'teleport'"),
        ("global teleport", "err Invalid DB query syntax, near 'teleport'"),
        ("global get-agent-info", "err Invalid DB query syntax, near 'get-agent-info'"),
        ('global update-keepalive {"id":1,', "err Invalid JSON syntax, near '{\"id\":1,'"),
        ("global update-keepalive [1, 2]", "err Invalid JSON data, near '[1, 2]'"),
        (
            'global insert-agent {"id":"x","name":"n","date_add":1}',
            'err Invalid JSON data, near \'{"id":"x","name":"n","date_add":\'',
        ),
        ("global get-all-agents since 3", "err Invalid arguments 'last_id' or 'context' not found"),
        ("global disconnect-agents 0", "err Invalid arguments keepalive not found"),
        ("agent 001", "err Invalid DB query syntax, near '001'"),
        ("agent 1x vacuum", "err Invalid agent ID '1x'"),
        ("agent 999 vacuum", "err Agent not found"),
        ("agent 1 syscheck load", "err Invalid DB query syntax, near 'syscheck'"),
        ("remoted teleport web", "err Invalid DB query syntax, near 'teleport'"),
    ],
)
def test_malformed_requests_get_wazuhs_errors(served: Served, request_text: str, answer: str) -> None:
    assert served.query(request_text) == answer


def test_error_near_text_is_cut_at_32_characters(served: Served) -> None:
    assert served.query("global " + "x" * 100) == "err Invalid DB query syntax, near '" + "x" * 32 + "'"


def test_oversized_length_header_closes_the_connection(served: Served) -> None:
    with served.raw() as sock:
        sock.sendall(HEADER.pack(OS_MAXSTR + 1) + b"global select-groups")
        assert read_answer(sock) is None


def test_zero_length_message_closes_the_connection(served: Served) -> None:
    with served.raw() as sock:
        sock.sendall(HEADER.pack(0))
        assert read_answer(sock) is None


def test_truncated_frame_then_silence_is_closed_and_others_are_served_meanwhile(served: Served) -> None:
    with served.raw() as stalled:
        stalled.sendall(HEADER.pack(100) + b"global sel")
        started = time.monotonic()
        assert served.query("global select-agent-name 1") == 'ok [{"name":"agent-00001"}]'
        assert read_answer(stalled) is None
        assert time.monotonic() - started < 3


def test_half_a_header_then_silence_is_closed(served: Served) -> None:
    with served.raw() as stalled:
        stalled.sendall(b"\x10\x00")
        assert read_answer(stalled) is None


def test_clients_past_the_limit_are_turned_away(tmp_path: Path) -> None:
    served = Served(tmp_path / "ossec", max_clients=2)
    try:
        first, second = served.client(), served.client()
        assert first.query("global select-groups").startswith("ok")
        assert second.query("global select-groups").startswith("ok")
        with served.raw() as third:
            assert read_answer(third) is None  # closed at once, before it could ask anything
        first.close()
        second.close()
        for _ in range(50):  # once the server has seen the two closes, there is room again
            if served.server.stats["refused_clients"] == 1 and len(served.server._clients) == 0:
                break
            time.sleep(0.05)
        assert served.query("global select-groups").startswith("ok")
    finally:
        served.close()


def test_a_slow_sql_query_does_not_block_other_clients(served: Served) -> None:
    answers: list[str] = []
    slow = threading.Thread(
        target=lambda: answers.append(
            served.query(
                "global sql WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n"
            )
        )
    )
    slow.start()
    time.sleep(0.2)
    started = time.monotonic()
    assert served.query("global select-agent-name 1").startswith("ok")
    assert time.monotonic() - started < 1
    slow.join(30)
    assert answers == ["err Cannot execute Global database query; interrupted after 1.5 s"]


def test_an_idle_connection_is_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    served = Served(tmp_path / "ossec", idle_timeout=0.3)
    try:
        with served.raw() as idle:
            started = time.monotonic()
            assert read_answer(idle) is None  # closed by the server, nothing sent
            assert 0.2 < time.monotonic() - started < 3
    finally:
        served.close()


@pytest.mark.parametrize(
    "request_text",
    [
        'global insert-agent {"id":99999999999999999999999,"name":"n","date_add":1}',
        'global insert-agent {"id":-4,"name":"n","date_add":1}',
        'global insert-agent {"id":60,"name":"\\ud800","date_add":1}',
        'global sync-agent-info-set [{"id":1,"name":"agent-00001","ip":{"nested":true}}]',
        'global update-status-code {"id":1,"status_code":1,"version":"\\udfff","sync_status":"synced"}',
        'global update-keepalive {"id":1e999,"connection_status":"active","sync_status":"synced"}',
        "global update-keepalive " + "[" * 100_00 + "]" * 100_00,
    ],
)
def test_values_the_writer_could_not_store_are_refused_and_writes_go_on(
    served: Served, request_text: str
) -> None:
    assert served.query(request_text).startswith("err Invalid JSON")
    assert (
        served.query('global update-keepalive {"id":2,"connection_status":"pending","sync_status":"synced"}')
        == "ok"
    )
    assert served.store.write_errors == 0


def test_huge_numbers_in_text_arguments_are_clamped(served: Served) -> None:
    assert served.query("global get-agent-info 99999999999999999999999999") == "ok []"
    assert served.query("global get-all-agents last_id -99999999999999999999999") == (
        'ok [{"id":0},{"id":1},{"id":2},{"id":3},{"id":4},{"id":5}]'
    )
    assert served.query("global delete-agent 99999999999999999999999") == "ok"


# -- reads ---------------------------------------------------------------------------------------------


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


# -- status writes -------------------------------------------------------------------------------------


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
    assert served.store.agent_db_path(1).exists()  # created on the agent's first startup, as from remoted


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


# -- agent rows ----------------------------------------------------------------------------------------


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


# -- groups --------------------------------------------------------------------------------------------


def test_set_agent_groups_modes_keep_wazuhs_priority_order(served: Served) -> None:
    assert served.query("global insert-agent-group web") == "ok"
    request = 'global set-agent-groups {{"mode":"{mode}","sync_status":"syncreq","data":[{{"id":1,"groups":{groups}}}]}}'
    assert served.query(request.format(mode="append", groups='["web","db"]')) == "ok"
    assert served.query("global select-group-belong 1") == 'ok ["default","web","db"]'
    priorities = served.rows(
        "SELECT g.name, b.priority FROM belongs b JOIN `group` g ON g.id = b.id_group WHERE b.id_agent = 1 ORDER BY b.priority"
    )
    assert [tuple(row) for row in priorities] == [("default", 0), ("web", 1), ("db", 2)]
    assert served.query(request.format(mode="remove", groups='["default"]')) == "ok"
    assert served.query("global select-agent-group 1") == 'ok [{"group":"web,db"}]'
    assert served.query(request.format(mode="empty_only", groups='["ops"]')) == "ok"
    assert served.query("global select-group-belong 1") == 'ok ["web","db"]'
    assert served.query(request.format(mode="override", groups='["ops"]')) == "ok"
    assert served.query("global select-group-belong 1") == 'ok ["ops"]'
    assert served.query(request.format(mode="remove", groups='["ops"]')) == "ok"
    assert served.query("global select-group-belong 1") == 'ok ["default"]'
    sync = served.rows("SELECT group_sync_status, group_hash FROM agent WHERE id = 1")[0]
    assert sync[0] == "syncreq" and sync[1] == "7505d64a"


def test_set_agent_groups_errors(served: Served) -> None:
    assert (
        served.query('global set-agent-groups {"mode":"merge","data":[]}')
        == "err Invalid mode 'merge' in set_agent_groups command"
    )
    assert (
        served.query('global set-agent-groups {"data":[]}')
        == "err Invalid JSON data, missing required fields"
    )
    assert (
        served.query('global set-agent-groups {"mode":"append","data":[{"id":404,"groups":["web"]}]}')
        == "err An error occurred during the set of the groups"
    )
    assert (
        served.query('global set-agent-groups {"mode":"append","data":[{"id":1,"groups":["../etc"]}]}')
        == "err An error occurred during the set of the groups"
    )


def test_delete_group_sends_its_agents_back_to_default(served: Served) -> None:
    served.query(
        'global set-agent-groups {"mode":"override","data":[{"id":1,"groups":["web"]},{"id":2,"groups":["web","db"]}]}'
    )
    assert served.query("global delete-group web") == "ok"
    assert served.query("global select-group-belong 1") == 'ok ["default"]'
    assert served.query("global select-group-belong 2") == 'ok ["db"]'
    assert served.query("global find-group web") == "ok []"
    assert served.query("global delete-group default") == "err Error deleting group in global.db."


def test_group_listing_commands(served: Served) -> None:
    served.query(
        'global set-agent-groups {"mode":"append","data":[{"id":3,"groups":["web"]},{"id":5,"groups":["web"]}]}'
    )
    assert served.query("global select-groups") == 'ok [{"name":"default"},{"name":"web"}]'
    assert served.query("global find-group web") == 'ok [{"id":2}]'
    assert served.query("global get-group-agents web last_id 0") == "ok [3,5]"
    assert served.query("global get-group-agents web last_id 3") == "ok [5]"
    assert served.query("global get-group-agents web") == "err Invalid arguments, 'last_id' not found."
    assert served.query("global get-distinct-groups") == (
        'ok [{"group":"default","group_hash":"7505d64a"},{"group":"default,web","group_hash":"bb533513"}]'
    )
    assert (
        served.query("global get-distinct-groups 7505d64a")
        == 'ok [{"group":"default,web","group_hash":"bb533513"}]'
    )


def test_force_reconnect_tells_the_members_of_a_group(served: Served) -> None:
    served.query(
        'global set-agent-groups {"mode":"append","data":[{"id":2,"groups":["web"]},{"id":4,"groups":["web"]}]}'
    )
    assert served.query("remoted force-reconnect web") == 'ok {"group":"web","members":2,"sent":1}'
    assert served.sent == [([2, 4], FORCE_RECONNECT)]
    assert served.query("remoted force-reconnect nowhere") == "err Group 'nowhere' not found"


# -- cluster sync --------------------------------------------------------------------------------------


def test_sync_agent_info_set_then_get(served: Served) -> None:
    agent = {
        "id": 1,
        "name": "agent-00001",
        "ip": "10.0.0.1",
        "os_name": "Debian",
        "version": "Wazuh v4.14.7",
    }
    agent |= {"connection_status": "active", "labels": [{"id": 1, "key": "env", "value": "lab"}]}
    assert served.query("global sync-agent-info-set " + json.dumps([agent])) == "ok"
    row = served.rows("SELECT ip, os_name, connection_status, sync_status FROM agent WHERE id = 1")[0]
    assert tuple(row) == ("10.0.0.1", "Debian", "active", "synced")
    assert served.query("global get-labels 1") == 'ok [{"id":1,"key":"env","value":"lab"}]'
    served.query(
        'global update-keepalive {"id":2,"connection_status":"active","sync_status":"syncreq_keepalive"}'
    )
    (item,) = json.loads(served.query("global sync-agent-info-get").removeprefix("ok "))
    assert set(item) == {"id", "last_keepalive"} and item["id"] == 2
    assert served.query("global sync-agent-info-get") == "ok []"  # what was sent is marked synced


# -- upkeep --------------------------------------------------------------------------------------------


def test_vacuum_and_fragmentation_answers(served: Served) -> None:
    assert re.fullmatch(r'ok \{"fragmentation_after_vacuum":\d+\}', served.query("global vacuum"))
    fragmentation = json.loads(served.query("global get_fragmentation").removeprefix("ok "))
    assert set(fragmentation) == {"fragmentation", "free_pages_percentage"}
    metadata = dict(tuple(row) for row in served.rows("SELECT key, value FROM metadata"))
    assert metadata["last_vacuum_value"].isdigit() and int(metadata["last_vacuum_time"]) > 0


def test_agent_database_vacuum_and_fragmentation(served: Served) -> None:
    assert served.query("agent 1 vacuum") == "err Couldn't open DB for agent 1"
    served.query('global update-keepalive {"id":1,"connection_status":"pending","sync_status":"synced"}')
    assert re.fullmatch(r'ok \{"fragmentation_after_vacuum":\d+\}', served.query("agent 1 vacuum"))
    assert (
        json.loads(served.query("agent 1 get_fragmentation").removeprefix("ok "))["free_pages_percentage"]
        == 0
    )


# -- sql -----------------------------------------------------------------------------------------------


def test_sql_is_refused_unless_allowed(tmp_path: Path) -> None:
    served = Served(tmp_path / "ossec", allow_sql="no")
    try:
        assert served.query("global sql SELECT 1").startswith("err SQL queries are disabled")
    finally:
        served.close()


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM agent",
        "UPDATE agent SET name = 'x'",
        "DROP TABLE agent",
        "PRAGMA journal_mode=DELETE",
        "ATTACH DATABASE '/tmp/x.db' AS x",
        "BEGIN",
        "SELECT 1; DELETE FROM agent",
        "CREATE TEMP TABLE t(x)",
    ],
)
def test_sql_allows_no_write(served: Served, statement: str) -> None:
    answer = served.query(f"global sql {statement}")
    assert answer.startswith("err Cannot execute Global database query;")
    assert served.rows("SELECT COUNT(*) FROM agent")[0][0] == 6


def test_sql_read_only_select(served: Served) -> None:
    assert served.query("global sql SELECT id, name, ip FROM agent WHERE id < 2 ORDER BY id") == (
        'ok [{"id":0,"name":"mgr","ip":"127.0.0.1"},{"id":1,"name":"agent-00001"}]'
    )


def test_sql_answer_over_the_frame_is_an_error(tmp_path: Path) -> None:
    served = Served(tmp_path / "ossec", agents=3000)
    try:
        assert "passes 65536 bytes" in served.query("global sql SELECT * FROM agent")
    finally:
        served.close()


def test_run_read_only_sql_time_limit(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    sqlite3.connect(db).close()
    answer = run_read_only_sql(
        db, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n", 0.2
    )
    assert answer == "err Cannot execute Global database query; interrupted after 0.2 s"


# -- helpers -------------------------------------------------------------------------------------------


def test_page_stops_before_the_cap() -> None:
    status, text, taken = page(({"id": n} for n in range(100)), limit=50)
    assert status == "due" and len(text) <= 50 and taken == json.loads(text)
    assert page(iter([]))[:2] == ("ok", "[]")


def test_store_listeners_see_socket_transitions(served: Served) -> None:
    seen: list[TransitionRow] = []
    served.on_loop(lambda: served.store.subscribe(Subscriber(on_transition=seen.append)))
    served.query('global update-keepalive {"id":5,"connection_status":"pending","sync_status":"synced"}')
    assert [(r.agent_id, r.to_status) for r in seen] == [(5, ConnectionStatus.PENDING)]


def test_socket_file_is_mode_0660_and_removed_at_stop(tmp_path: Path) -> None:
    served = Served(tmp_path / "ossec")
    path = served.home.wdb_socket
    assert path.stat().st_mode & 0o777 == 0o660
    served.close()
    assert not path.exists()


def test_long_socket_path_still_binds(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    served = Served(deep)
    try:
        assert len(str(served.home.wdb_socket)) > 108
        assert served.store.global_db.exists()
        with served.client() as client:
            assert client.query("global select-agent-name 1") == 'ok [{"name":"agent-00001"}]'
    finally:
        served.close()
