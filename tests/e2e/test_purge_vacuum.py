"""Agents removed from client.keys leave global.db (and their files), and a vacuum with the manager running
gives the space of 50,000 deleted agents back to the disk."""

from __future__ import annotations

import asyncio
import time

from agentpulse.store.sqlite import maintenance
from tests.e2e.harness import ManagerProcess, run_cli
from tests.e2e.wdb_tools import FleetStats, ask, keep_only, run_agent, write_keys

REMOVED = 50_000
KEPT = 10


def _wait_for_count(manager: ManagerProcess, count: int, timeout: float) -> float:
    started = time.monotonic()
    seen = -1
    while time.monotonic() - started < timeout:
        seen = manager.query("SELECT COUNT(*) FROM agent WHERE id != 0")[0][0]
        if seen == count:
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"{seen} agents in global.db, expected {count}\n{manager.output()[-3000:]}")


def test_purge_of_50000_removed_agents_then_vacuum_with_the_manager_running(manager: ManagerProcess) -> None:
    manager.settings.database = ""  # the product default: purge_removed yes
    keys = write_keys(manager, KEPT + REMOVED)
    manager.start(timeout=120)
    gone = keys[KEPT]  # connected once, so it has a per-agent database; and a rids file

    async def connect_once() -> None:
        stats, stop = FleetStats(), asyncio.Event()
        task = asyncio.create_task(run_agent(manager, gone, stop, stats))
        await manager.reach(gone.number, "active")
        stop.set()
        await task

    asyncio.run(connect_once())
    agent_db = manager.home.agent_db(gone.number)
    rids = manager.home.rids_file(gone.id)
    rids.write_text("1:2:")
    assert agent_db.exists()
    size_full = maintenance.database_size(manager.home.global_db)

    keep_only(manager, {key.number for key in keys[:KEPT]})
    # Removing nearly everyone at once is refused unless forced (tests/security/test_keys_reload.py).
    forced = run_cli("agentpulse", "keys", "reload", "--force", home=manager.root)
    assert forced.returncode == 0 and "+0 -50000 (forced)" in forced.stdout, forced
    purge_seconds = _wait_for_count(manager, KEPT, timeout=60)
    assert not agent_db.exists() and not rids.exists()
    assert manager.history(gone.number)[-1][1] == "disconnected"
    assert manager.history(keys[-1].number) == [("never_connected", "disconnected", 0)]  # the removal row
    assert ask(manager, f"global get-agent-info {keys[-1].number}".encode()) == b"ok []"
    size_deleted = maintenance.database_size(manager.home.global_db)

    vacuumed = run_cli("agentpulse", "db", "vacuum", home=manager.root)
    assert vacuumed.returncode == 0, vacuumed.stderr
    assert "vacuumed (by the manager)" in vacuumed.stdout
    size_vacuumed = maintenance.database_size(manager.home.global_db)
    print(
        f"\nglobal.db: {size_full} bytes with {KEPT + REMOVED} agents, {size_deleted} after purging {REMOVED} "
        f"in {purge_seconds:.1f} s, {size_vacuumed} after the vacuum"
    )
    assert size_vacuumed < size_deleted * 0.6
    assert manager.process is not None and manager.process.poll() is None
    assert (
        ask(manager, b"global get-all-agents last_id 0")
        == ("ok [" + ",".join(f'{{"id":{n}}}' for n in range(1, KEPT + 1)) + "]").encode()
    )
    checked = run_cli("agentpulse", "db", "check", home=manager.root)
    assert checked.returncode == 0 and checked.stdout == "global.db: ok\n"
