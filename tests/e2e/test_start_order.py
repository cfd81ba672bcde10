"""The start with worker processes: they start (and load their keys) while the store resets the last run's
agents, and take no agent before that reset is committed; every agent of the last run gets its code 5 once.
"""

from __future__ import annotations

import asyncio
import re
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from agentpulse.agent.connection import AgentCodec, AgentConnection
from agentpulse.config import load_config
from agentpulse.manager import Manager
from agentpulse.paths import Home
from agentpulse.remoted.grace import GraceTracker
from agentpulse.remoted.replay import ReplayBook
from agentpulse.remoted.worker_pool import WorkerPool
from agentpulse.wire import control
from agentpulse.wire.counters import SenderCounter
from agentpulse.wire.keys import KeysFile
from tests.e2e.harness import LOOPBACK, ManagerProcess, ManagerSettings, free_port

LIVE = 3000  # agents live when the last run ended


def _refused(port: int) -> bool:
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1.0):
            return False
    except ConnectionRefusedError:
        return True


def test_spawned_workers_load_their_keys_and_listen_only_when_told(tmp_path: Path) -> None:
    settings, port = ManagerSettings(workers=2), free_port()
    home = Home(tmp_path / "ossec")
    home.create_layout()
    home.ossec_conf.write_text(settings.render(port))
    keys = KeysFile([])
    keys.add_many(f"agent-{n}" for n in range(1, 101))

    async def scenario() -> None:
        store: Any = None  # no agent talks to these workers before the end: no record reaches the store
        grace = GraceTracker(lambda update: None, 1.0)
        pool = WorkerPool(str(home.root), 2, store, grace, ReplayBook(grace.holder_mask, 60.0, False))
        pool.load_keys(keys.render())
        try:
            await pool.spawn()
            deadline = time.monotonic() + 30
            while any(w.keys_generation < pool.keys_generation for w in pool.workers):
                assert time.monotonic() < deadline, "the workers did not load their keys"
                await asyncio.sleep(0.05)
            # Both are up with their keys: for a second, nobody may connect.
            until = time.monotonic() + 1.0
            while time.monotonic() < until:
                assert await asyncio.to_thread(_refused, port), "a worker listened before it was told to"
                await asyncio.sleep(0.05)
            assert not any(w.ready.is_set() for w in pool.workers)
            await pool.listen()
            assert all(w.ready.is_set() for w in pool.workers) and pool.port == port
            assert not await asyncio.to_thread(_refused, port)
        finally:
            await pool.stop()

    asyncio.run(scenario())


def _make_live(manager: ManagerProcess, agent_ids: list[int]) -> None:
    """As a manager killed under its agents leaves global.db: they are active."""
    db = sqlite3.connect(manager.home.global_db)
    try:
        db.executemany(
            "UPDATE agent SET connection_status = 'active', status_code = 0 WHERE id = ?",
            [(agent_id,) for agent_id in agent_ids],
        )
        db.commit()
    finally:
        db.close()


async def _first_ack(
    manager: ManagerProcess, codec: AgentCodec, timeout: float
) -> dict[int, tuple[str, int]]:
    """Connect as soon as anything listens; at the startup's ack, what global.db holds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            connection = await AgentConnection.open(codec, LOOPBACK, manager.port)
            break
        except OSError:
            assert time.monotonic() < deadline, f"nothing listened\n{manager.output()[-3000:]}"
            await asyncio.sleep(0.02)
    connection.send(control.build_startup("v4.14.7"))
    assert await connection.receive() == control.Ack()
    seen = manager.statuses()
    connection.close()
    return seen


def test_a_restart_resets_the_last_runs_agents_once_and_committed_before_any_agent_is_taken(
    manager: ManagerProcess,
) -> None:
    manager.settings.workers = 2
    keys = manager.add_agents(LIVE + 1)
    probe, live = keys[-1], [key.number for key in keys[:-1]]
    manager.start()
    manager.stop()
    _make_live(manager, live)

    # The agent connects from the moment the manager is launched.
    starting = threading.Thread(target=manager.start, kwargs={"timeout": 60.0})
    starting.start()
    try:
        seen = asyncio.run(_first_ack(manager, AgentCodec(probe, counter=SenderCounter()), 60.0))
    finally:
        starting.join(70)
    not_reset = {agent_id: seen[agent_id] for agent_id in live if seen[agent_id] != ("disconnected", 5)}
    assert not not_reset, f"{len(not_reset)} agents not reset in global.db when the first agent was acked"

    # Every agent of the last run has exactly one code-5 row, and no worker listened before the commit.
    rows = manager.query(
        "SELECT agent_id, COUNT(*) FROM agent_status_history WHERE status_code = 5 GROUP BY agent_id"
    )
    assert {row[0]: row[1] for row in rows} == dict.fromkeys(live, 1)
    assert manager.history(live[0]) == [("active", "disconnected", 5)]
    out = manager.output()
    second_run = out[out.rindex("Started: ") :]  # from the reset's commit of this start
    before = out[: out.rindex("Started: ")]
    assert len(re.findall(r"Listening on .*/tcp", second_run)) == 2
    assert f"{LIVE} reset to disconnected (code 5)" in second_run
    assert before.count("Listening on") == 2  # the first start's two workers only


def test_the_manager_starts_its_workers_before_the_store_and_lets_them_listen_after_the_reset_commit(
    tmp_path: Path,
) -> None:
    # A flush every 10 s (the most allowed): the only commit before the listen is the one the start
    # forces, so a listen that came before it would see the reset not in global.db.
    process = ManagerProcess(tmp_path / "ossec", ManagerSettings(workers=2, flush_interval=10.0))
    live = [key.number for key in process.add_agents(500)]
    process.start()
    process.stop()
    _make_live(process, live)
    manager = Manager(process.home, load_config(process.home.ossec_conf), log_level="warning")
    pool = manager.pool
    assert pool is not None
    seen: dict[str, object] = {}
    spawn, listen = pool.spawn, pool.listen

    async def spawning() -> None:  # the real one, told when it is called
        seen.setdefault("agents in the store at spawn", len(manager.store.agents))  # the first call
        await spawn()

    async def listening() -> None:
        seen["global.db at listen"] = set(process.statuses().values())
        await listen()

    pool.spawn, pool.listen = spawning, listening  # type: ignore[method-assign]

    async def scenario() -> None:
        running = asyncio.create_task(manager.run())
        ready = asyncio.create_task(manager.ready.wait())
        await asyncio.wait((running, ready), timeout=60, return_when=asyncio.FIRST_COMPLETED)
        assert manager.ready.is_set(), "the manager did not start"
        manager.stop()
        await asyncio.wait_for(running, 60)

    asyncio.run(scenario())
    assert seen == {"agents in the store at spawn": 0, "global.db at listen": {("disconnected", 5)}}
