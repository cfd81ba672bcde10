"""Groups through the CLI against a real manager: a group of 1,000 agents reconnected in one command."""

from __future__ import annotations

import asyncio

from tests.e2e.harness import ManagerProcess, run_cli
from tests.e2e.wdb_tools import FleetStats, run_agent, write_keys

FLEET = 1000


def _seqs(manager: ManagerProcess) -> dict[int, int]:
    rows = manager.query("SELECT agent_id, MAX(seq) FROM agent_status_history GROUP BY agent_id")
    return {row[0]: row[1] for row in rows}


def test_a_group_of_1000_agents_reconnects_in_one_command(manager: ManagerProcess) -> None:
    manager.settings.connection_grace = 10  # a reconnect is not a disconnection
    keys = write_keys(manager, FLEET + 5)
    manager.start()

    async def scenario() -> tuple[FleetStats, dict[int, int], list[str]]:
        stats, stop = FleetStats(), asyncio.Event()
        agents = [asyncio.create_task(run_agent(manager, key, stop, stats)) for key in keys]
        await manager.reach_all("active", FLEET + 5, timeout=60)
        outputs = []
        for args in (("create", "fleet"), ("assign", "fleet", f"1-{FLEET}")):
            done = await asyncio.to_thread(run_cli, "agentpulse", "group", *args, home=manager.root)
            assert done.returncode == 0, done.stderr
            outputs.append(done.stdout)
        before = _seqs(manager)
        done = await asyncio.to_thread(
            run_cli, "agentpulse", "group", "reconnect", "fleet", home=manager.root
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
        for _ in range(600):
            if len(stats.reconnects) == FLEET and all(stats.sessions[k.number] == 2 for k in keys[:FLEET]):
                break
            await asyncio.sleep(0.1)
        await manager.reach_all("active", FLEET + 5, timeout=30)
        for _ in range(100):  # the second keep-alive of the last agents may still be in the writer's batch
            if all(seq >= before[number] + 2 for number, seq in _seqs(manager).items() if number <= FLEET):
                break
            await asyncio.sleep(0.1)
        stop.set()
        await asyncio.gather(*agents)
        return stats, before, outputs

    stats, before, outputs = asyncio.run(scenario())
    assert outputs == [
        "Group 'fleet' created.\n",
        f"{FLEET} agents added to group 'fleet'.\n",
        f"Group 'fleet': {FLEET} agents, {FLEET} connected ones told to reconnect.\n",
    ]
    assert stats.failures == []
    assert set(stats.reconnects) == {key.number for key in keys[:FLEET]}  # the 5 others were not told
    rows = manager.query(
        "SELECT agent_id, from_status, to_status, status_code FROM agent_status_history WHERE seq > ? "
        "AND agent_id = ? ORDER BY seq",
        before[1],
        1,
    )
    assert [tuple(row)[1:] for row in rows] == [("active", "pending", 0), ("pending", "active", 0)]
    after = manager.query(
        "SELECT h.agent_id, h.from_status, h.to_status FROM agent_status_history h "
        "JOIN (SELECT agent_id, MAX(seq) AS last FROM agent_status_history GROUP BY agent_id) m "
        "ON m.agent_id = h.agent_id AND h.seq > m.last - 2 WHERE h.agent_id <= ? ORDER BY h.agent_id, h.seq",
        FLEET,
    )
    transitions: dict[int, list[tuple[str, str]]] = {}
    for row in after:
        transitions.setdefault(row[0], []).append((row[1], row[2]))
    assert len(transitions) == FLEET
    assert all(pair == [("active", "pending"), ("pending", "active")] for pair in transitions.values())
    assert all(manager.history(number)[-1] == ("pending", "active", 0) for number in (FLEET + 1, FLEET + 5))
    listing = run_cli("agent_control", "-l", "-g", "fleet", home=manager.root)
    listed = [
        line for line in listing.stdout.splitlines() if line.startswith("   ID: ") and "(server)" not in line
    ]
    assert len(listed) == FLEET
