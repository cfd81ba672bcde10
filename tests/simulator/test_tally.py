"""The simulator's tally: what a snapshot reports from the counters and the agents' flags."""

from __future__ import annotations

from pathlib import Path

from agentpulse.agent.connection import AgentCodec
from agentpulse.simulator.agents import SimAgent
from agentpulse.simulator.keys import create_keys
from agentpulse.simulator.plan import Role
from agentpulse.simulator.tally import Tally


def agents(tmp_path: Path, count: int) -> list[SimAgent]:
    keys = create_keys(tmp_path / "client.keys", count)
    return [
        SimAgent(index, key, AgentCodec(key), "127.0.0.1", 0.0, Role.NORMAL) for index, key in enumerate(keys)
    ]


def test_the_final_snapshot_counts_agents_never_connected_and_never_acked(tmp_path: Path) -> None:
    fleet = agents(tmp_path, 4)
    fleet[0].connected_once = fleet[0].acked_once = True
    fleet[1].connected_once = True  # connected, its startup never acknowledged
    tally = Tally(connected=2, acked=1)
    tally.error("ack_timeout")
    running = tally.snapshot(fleet, started=100.0, now=103.0)
    assert running.errors == {"ack_timeout": 1} and running.elapsed == 3.0
    final = tally.snapshot(fleet, started=100.0, now=104.0, final=True)
    assert final.errors == {"ack_timeout": 1, "never_connected": 2, "never_acked": 1}
    assert (final.agents, final.connected, final.acked) == (4, 2, 1)
    assert tally.errors == {"ack_timeout": 1}  # the snapshot's additions are not counted twice


def test_the_steady_window_counts_acks_and_latency_from_its_start(tmp_path: Path) -> None:
    tally = Tally()
    tally.keepalives_acked = 10
    tally.latency.record(0.5)
    tally.mark_steady(50.0)
    tally.keepalives_acked = 25
    tally.latency.record(0.001)
    snapshot = tally.snapshot(agents(tmp_path, 1), started=40.0, now=55.0)
    assert (snapshot.steady_acked, snapshot.steady_s) == (15, 5.0)
    assert snapshot.steady_latency.total == 1 and snapshot.latency.total == 2
