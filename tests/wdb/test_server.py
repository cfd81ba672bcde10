"""The query socket server against a real store: framing, Wazuh's syntax errors, and the guards against
bad or slow clients."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from agentpulse.config import DatabaseConfig
from agentpulse.wdb import server
from agentpulse.wdb.protocol import OS_MAXSTR
from agentpulse.wire.frames import LENGTH
from tests.wdb.served import Served, frame, read_answer


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
        sock.sendall(LENGTH.pack(OS_MAXSTR + 1) + b"global select-groups")
        assert read_answer(sock) is None


def test_zero_length_message_closes_the_connection(served: Served) -> None:
    with served.raw() as sock:
        sock.sendall(LENGTH.pack(0))
        assert read_answer(sock) is None


def test_truncated_frame_then_silence_is_closed_and_others_are_served_meanwhile(served: Served) -> None:
    with served.raw() as stalled:
        stalled.sendall(LENGTH.pack(100) + b"global sel")
        started = time.monotonic()
        assert served.query("global select-agent-name 1") == 'ok [{"name":"agent-00001"}]'
        assert read_answer(stalled) is None
        assert time.monotonic() - started < 3


def test_half_a_header_then_silence_is_closed(served: Served) -> None:
    with served.raw() as stalled:
        stalled.sendall(b"\x10\x00")
        assert read_answer(stalled) is None


def test_the_servers_limits_are_the_configs_defaults() -> None:
    defaults = DatabaseConfig()
    assert (defaults.wdb_max_clients, defaults.wdb_idle_timeout) == (server.MAX_CLIENTS, server.IDLE_TIMEOUT)


def test_a_newcomer_closes_the_client_idle_the_longest_when_every_slot_is_taken(tmp_path: Path) -> None:
    served = Served(tmp_path / "ossec", max_clients=2)
    try:
        first, second = served.client(), served.client()
        assert first.query("global select-groups").startswith("ok")
        assert second.query("global select-groups").startswith("ok")
        with served.client() as third:
            assert third.query("global select-agent-name 1") == 'ok [{"name":"agent-00001"}]'
        with pytest.raises(ConnectionError):
            first.query("global select-groups")  # it had been idle the longest: closed to make room
        assert second.query("global select-groups").startswith("ok")
        assert served.server.stats["evicted_clients"] == 1
        first.close()
        second.close()
    finally:
        served.close()


def test_a_newcomer_is_turned_away_only_while_every_client_is_being_answered(tmp_path: Path) -> None:
    served = Served(tmp_path / "ossec", max_clients=1, sql_time_limit=1.5)
    try:
        slow = threading.Thread(
            target=served.query,
            args=(
                "global sql WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n) SELECT count(*) FROM n",
            ),
        )
        slow.start()
        for _ in range(50):  # until its request is being answered
            if any(
                slot.waiting_since is None
                for slot in served.on_loop(lambda: list(served.server._clients.values()))
            ):
                break
            time.sleep(0.02)
        with served.raw() as newcomer:
            assert read_answer(newcomer) is None  # closed at once, before it could ask anything
        slow.join(30)
        assert served.server.stats["refused_clients"] == 1
        assert served.query("global select-groups").startswith("ok")
    finally:
        served.close()


def test_a_client_stalled_in_a_frame_can_be_closed_to_make_room(tmp_path: Path) -> None:
    served = Served(tmp_path / "ossec", max_clients=1, frame_timeout=30)
    try:
        with served.raw() as stalled:
            stalled.sendall(LENGTH.pack(100) + b"global sel")
            for _ in range(50):  # until the server holds it
                if served.on_loop(lambda: len(served.server._clients)) == 1:
                    break
                time.sleep(0.02)
            started = time.monotonic()
            assert served.query("global select-agent-name 1") == 'ok [{"name":"agent-00001"}]'
            assert time.monotonic() - started < 2
            assert read_answer(stalled) is None
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
