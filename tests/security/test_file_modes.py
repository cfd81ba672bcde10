"""What the manager creates is not for other users (umask 0027: files 0640), and a key-holding file that
exists already and is world-readable is named at start, one warning line each (issue 17, item 8)."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from pathlib import Path

from agentpulse.agent.connection import AgentCodec, AgentConnection
from agentpulse.wire import control
from tests.e2e.harness import LOOPBACK, ManagerProcess
from tests.e2e.test_statuses import KEEPALIVE

OTHERS = stat.S_IRWXO


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_file_the_manager_creates_is_0640_or_tighter(manager: ManagerProcess) -> None:
    manager.write_config()  # ossec.conf, written by the test: not the manager's
    ours = {manager.home.ossec_conf, manager.root / "manager.out"}
    manager.start()  # init_home creates client.keys; the store global.db, its WAL; the log; the state file
    keys = manager.add_agents(1)  # the test writes this client.keys afresh: not the manager's either
    ours.add(manager.home.client_keys)
    manager.signal(1)  # SIGHUP: the new agent now

    async def connect() -> None:
        for _ in range(50):
            connection = await AgentConnection.open(AgentCodec(keys[0]), LOOPBACK, manager.port)
            connection.send(control.build_startup("v4.14.7"))
            if await connection.receive(timeout=5) == control.Ack():
                connection.send(KEEPALIVE)
                assert await connection.receive() == control.Ack()
                connection.close()
                return
            await asyncio.sleep(0.1)
        raise AssertionError("agent never accepted")

    asyncio.run(connect())
    manager.wait_for(keys[0].number, "active")
    deadline = time.monotonic() + 10  # the agent's own database is made off the writer's path, after
    while not any(manager.root.rglob("001.db")) and time.monotonic() < deadline:
        time.sleep(0.05)
    created = {path: _mode(path) for path in manager.root.rglob("*") if path.is_file() and path not in ours}
    names = {path.name for path in created}
    assert {"global.db", "global.db-wal", "ossec.log", "001.db"} <= names, sorted(names)
    assert {path: oct(mode) for path, mode in created.items() if mode & OTHERS} == {}


def test_a_world_readable_key_file_is_named_at_start_once(manager: ManagerProcess) -> None:
    manager.add_agents(2)
    manager.start()
    manager.stop()
    os.chmod(manager.home.client_keys, 0o644)
    os.chmod(manager.home.global_db, 0o604)
    manager.start()
    manager.stop()
    second_run = manager.output().rsplit("agentpulse manager starting", 1)[1]
    run_two = [line for line in second_run.splitlines() if "is readable by every user" in line]
    keys_lines = [line for line in run_two if str(manager.home.client_keys) in line]
    db_lines = [line for line in run_two if f"{manager.home.global_db} " in line]
    assert len(keys_lines) == 1 and "mode 0644" in keys_lines[0] and "WARNING" in keys_lines[0], run_two
    assert len(db_lines) == 1 and "mode 0604" in db_lines[0], run_two
    assert len(run_two) == 2, run_two  # global.db-wal and -shm (0640, the manager's) are not named
    assert _mode(manager.home.client_keys) == 0o644  # named, not changed: the mode is the operator's
