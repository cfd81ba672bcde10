"""The plan: how agents are spread over processes and source addresses, and what a request must satisfy."""

from __future__ import annotations

import pytest

from agentpulse.simulator.plan import (
    SimulatorConfig,
    default_processes,
    default_sources,
    is_loopback,
    source_addresses,
    split_members,
)
from agentpulse.wire.keys import KeysFile
from tests.e2e.harness import LOOPBACK


def test_agents_are_spread_round_robin_over_processes_and_loopback_sources() -> None:
    keys = KeysFile([]).add_many(f"a-{n:03d}" for n in range(7))
    parts = split_members(keys, 3)
    assert [[index for index, _ in part] for part in parts] == [[0, 3, 6], [1, 4], [2, 5]]
    sources = source_addresses(300)
    assert len(set(sources)) == 300
    assert sources[0] == "127.0.1.1" and sources[254] == "127.0.2.1"
    assert all(is_loopback(address) and not address.endswith((".0", ".255")) for address in sources)
    assert default_processes(15_000) == 1 and default_processes(15_001) == 2
    assert default_sources(4_000) == 1 and default_sources(50_000) == 13


def test_failure_shares_need_a_time_and_the_manager_must_be_local() -> None:
    with pytest.raises(ValueError, match="need fail-at"):
        SimulatorConfig(LOOPBACK, 1514, 10, silent_share=0.5)
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8"):
        SimulatorConfig("192.0.2.1", 1514, 10)
    assert SimulatorConfig(LOOPBACK, 1514, 40, silent_share=0.25, shutdown_share=0.3, fail_at=1).failing == (
        10,
        12,
    )


def test_further_managers_follow_the_first_in_order_and_must_be_local_too() -> None:
    config = SimulatorConfig(LOOPBACK, 1514, 10, more_servers=(("127.0.0.2", 1515), ("127.0.0.3", 1516)))
    assert config.servers == ((LOOPBACK, 1514), ("127.0.0.2", 1515), ("127.0.0.3", 1516))
    with pytest.raises(ValueError, match=r"not '192\.0\.2\.1'"):
        SimulatorConfig(LOOPBACK, 1514, 10, more_servers=(("192.0.2.1", 1514),))
