"""The query socket of a real manager, in raw frames: every command's answer, paging over 10,000 agents,
the `\\n` rule, and malformed input that never disturbs 500 agents keeping alive meanwhile."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from agentpulse.wdb.protocol import OS_MAXSTR, WDB_MAX_RESPONSE_SIZE
from agentpulse.wire.frames import LENGTH
from tests.e2e.harness import ManagerProcess
from tests.e2e.wdb_tools import FleetStats, answer, ask, frame, raw_socket, run_agent, write_keys

FLEET = 10_000
LIVE = 500


def _page_through(manager: ManagerProcess) -> tuple[list[int], list[str]]:
    ids: list[int] = []
    statuses: list[str] = []
    with raw_socket(manager) as sock:
        last = 0
        for _ in range(100):
            sock.sendall(frame(f"global get-all-agents last_id {last}".encode()))
            reply = answer(sock)
            assert reply is not None and len(reply) <= WDB_MAX_RESPONSE_SIZE + 4
            status, _, payload = reply.decode().partition(" ")
            page = [row["id"] for row in json.loads(payload)]
            ids.extend(page)
            statuses.append(status)
            if status == "ok":
                break
            last = page[-1]
    return ids, statuses


def _malformed_cases(manager: ManagerProcess) -> None:
    assert ask(manager, b"global update-keepalive {not json") == b"err Invalid JSON syntax, near '{not json'"
    assert ask(manager, b"global frobnicate 1") == b"err Invalid DB query syntax, near 'frobnicate'"
    assert (
        ask(manager, b"globalget-agent-info") == b"err Invalid DB query syntax, near 'globalget-agent-info'"
    )
    assert ask(manager, b"wazuh get 1") == b"err Invalid DB query actor: 'wazuh'"
    with raw_socket(manager) as sock:  # a length past the maximum: closed, nothing read
        sock.sendall(LENGTH.pack(OS_MAXSTR + 1) + b"global get-agent-info 1")
        assert answer(sock) is None
    with raw_socket(manager) as sock:
        sock.sendall(LENGTH.pack(0xFFFFFFFF))
        assert answer(sock) is None
    with raw_socket(manager, timeout=15) as stalled:  # a frame cut short, then silence: closed in time
        stalled.sendall(LENGTH.pack(64) + b"global get-")
        started = time.monotonic()
        assert ask(manager, b"global select-agent-name 1") == b'ok [{"name":"agent-00001"}]'
        assert answer(stalled) is None
        assert time.monotonic() - started < 10


def test_malformed_queries_and_paging_leave_500_keepalive_agents_untouched(manager: ManagerProcess) -> None:
    keys = write_keys(manager, FLEET)
    manager.start(timeout=60)

    async def scenario() -> tuple[FleetStats, list[int], list[str]]:
        stats = FleetStats()
        stop = asyncio.Event()
        agents = [
            asyncio.create_task(run_agent(manager, key, stop, stats, interval=0.5)) for key in keys[:LIVE]
        ]
        await manager.reach_all("active", LIVE, timeout=30)
        ids, statuses = await asyncio.to_thread(_page_through, manager)
        await asyncio.to_thread(_malformed_cases, manager)
        with_newline = await asyncio.to_thread(ask, manager, b"global select-agent-name 2\n")
        assert with_newline == b'ok [{"name":"agent-00002"}]\n'
        stats.quiet = True
        for _ in range(100):
            if stats.all_acked():
                break
            await asyncio.sleep(0.1)
        statuses_now = manager.statuses()
        stop.set()
        await asyncio.gather(*agents)
        assert sum(1 for number in range(1, LIVE + 1) if statuses_now[number] == ("active", 0)) == LIVE
        return stats, ids, statuses

    stats, ids, statuses = asyncio.run(scenario())
    assert ids == list(range(1, FLEET + 1))
    assert statuses[-1] == "ok" and set(statuses[:-1]) == {"due"} and len(statuses) >= 2
    assert stats.failures == []
    assert stats.all_acked()
    assert min(stats.sent.values()) >= 2  # they kept sending during the whole test
    assert sum(stats.sent.values()) == sum(stats.acks.values())
    assert all(count == 1 for count in stats.sessions.values())  # nobody was disconnected


def test_every_command_answers_on_a_populated_database(manager: ManagerProcess) -> None:
    manager.settings.database = "<allow_sql>read-only</allow_sql><purge_removed>no</purge_removed>"
    keys = write_keys(manager, 20)
    manager.start()

    async def connect_three() -> tuple[asyncio.Event, list[asyncio.Task[None]]]:
        stats, stop = FleetStats(), asyncio.Event()
        tasks = [asyncio.create_task(run_agent(manager, key, stop, stats)) for key in keys[:3]]
        await manager.reach_all("active", 3)
        return stop, tasks

    async def scenario() -> None:
        stop, tasks = await connect_three()
        await asyncio.to_thread(_every_command, manager)
        stop.set()
        await asyncio.gather(*tasks)

    asyncio.run(scenario())


def _q(manager: ManagerProcess, text: str) -> str:
    reply = ask(manager, text.encode())
    assert reply is not None
    return reply.decode()


def _ok_json(manager: ManagerProcess, text: str) -> Any:
    status, _, payload = _q(manager, text).partition(" ")
    assert status == "ok", payload
    return json.loads(payload)


def _every_command(manager: ManagerProcess) -> None:
    now = int(time.time())
    (info,) = _ok_json(manager, "global get-agent-info 1")
    assert info["connection_status"] == "active" and info["os_name"] == "Debian GNU/Linux"
    assert info["ip"] == "127.0.0.1" and info["version"] == "Wazuh v4.14.7" and "os_build" not in info
    assert _q(manager, "global get-agent-info 999") == "ok []"
    assert _ok_json(manager, "global get-all-agents last_id 18") == [{"id": 19}, {"id": 20}]
    assert _ok_json(manager, "global get-agents-by-connection-status 0 active") == [
        {"id": 1},
        {"id": 2},
        {"id": 3},
    ]
    assert _ok_json(manager, "global get-agents-by-connection-status 0 active unknown 1") == []
    assert _ok_json(manager, "global get-labels 1")[0]["key"] == '"env"'
    assert _q(manager, "global select-agent-name 4") == 'ok [{"name":"agent-00004"}]'
    assert _q(manager, "global select-agent-group 4") == 'ok [{"group":"default"}]'
    assert _q(manager, 'global find-agent {"name":"agent-00004","ip":"any"}') == 'ok [{"id":4}]'
    keepalive = '{"id":5,"connection_status":"pending","sync_status":"synced"}'
    assert _q(manager, f"global update-keepalive {keepalive}") == "ok"
    assert manager.status(5) == ("pending", 0)
    assert (
        _q(
            manager,
            'global update-connection-status {"id":5,"connection_status":"disconnected","sync_status":"synced","status_code":3}',
        )
        == "ok"
    )
    assert manager.status(5) == ("disconnected", 3)
    assert _q(manager, 'global update-status-code {"id":6,"status_code":2,"sync_status":"synced"}') == "ok"
    assert manager.status(6) == ("never_connected", 2)
    assert (
        _q(manager, 'global update-keepalive {"id":7,"connection_status":"active","sync_status":"synced"}')
        == "ok"
    )
    assert _q(manager, f"global disconnect-agents 6 {now + 60} synced") == 'ok [{"id":7}]'
    assert manager.status(7) == ("disconnected", 4)
    assert (
        _q(manager, 'global update-keepalive {"id":8,"connection_status":"pending","sync_status":"synced"}')
        == "ok"
    )
    assert _q(manager, "global reset-agents-connection synced") == "ok"
    assert manager.status(8) == ("disconnected", 5)
    assert manager.status(1) == ("disconnected", 5)  # live agents too: what Wazuh's remoted does at start
    assert (
        _q(manager, 'global insert-agent {"id":100,"name":"extra","register_ip":"any","date_add":1}') == "ok"
    )
    assert _ok_json(manager, "global get-agent-info 100")[0]["name"] == "extra"
    assert _q(manager, "global delete-agent 100") == "ok"
    assert _q(manager, "global get-agent-info 100") == "ok []"
    assert manager.history(100)[-1] == ("never_connected", "disconnected", 0)
    assert _q(manager, "global insert-agent-group web") == "ok"
    assert _q(manager, 'global set-agent-groups {"mode":"append","data":[{"id":9,"groups":["web"]}]}') == "ok"
    assert _q(manager, "global select-group-belong 9") == 'ok ["default","web"]'
    assert _ok_json(manager, "global get-distinct-groups") == [
        {"group": "default", "group_hash": "37a8eec1"},
        {"group": "default,web", "group_hash": "5288d400"},
    ]
    assert _q(manager, "global sync-agent-info-get") == "ok []"
    agent = {"id": 10, "name": "agent-00010", "os_name": "Alpine", "connection_status": "never_connected"}
    assert _q(manager, "global sync-agent-info-set " + json.dumps([agent])) == "ok"
    assert _ok_json(manager, "global get-agent-info 10")[0]["os_name"] == "Alpine"
    assert set(_ok_json(manager, "global vacuum")) == {"fragmentation_after_vacuum"}
    assert set(_ok_json(manager, "global get_fragmentation")) == {"fragmentation", "free_pages_percentage"}
    assert set(_ok_json(manager, "agent 1 vacuum")) == {"fragmentation_after_vacuum"}
    assert set(_ok_json(manager, "agent 1 get_fragmentation")) == {"fragmentation", "free_pages_percentage"}
    assert _q(manager, "agent 11 vacuum") == "err Couldn't open DB for agent 11"
    assert _q(manager, "global sql SELECT COUNT(*) AS n FROM agent") == 'ok [{"n":21}]'
    assert _q(manager, "global sql DELETE FROM agent").startswith("err Cannot execute Global database query;")
    assert _q(manager, "remoted force-reconnect web") == 'ok {"group":"web","members":1,"sent":0}'
