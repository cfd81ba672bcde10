"""Fixtures for end-to-end tests: real agent processes, stopped whatever the test does (the manager
fixture is shared, in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentpulse.agent.home import init_agent_home
from agentpulse.cluster.localnats import LocalNatsCluster
from agentpulse.wire.keys import AgentKey
from tests.e2e.harness import LOOPBACK, AgentFactory, AgentProcess, ManagerProcess
from tests.events.natsserver import wait_for_replicated_streams


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[LocalNatsCluster]:
    """Three nats-servers clustered on loopback, ready for R3 streams; stopped after."""
    cluster = LocalNatsCluster(tmp_path / "nats-cluster", 3)
    cluster.start()
    try:
        wait_for_replicated_streams(cluster.urls, 3)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def agent_process(tmp_path: Path, manager: ManagerProcess) -> Iterator[AgentFactory]:
    """`agent_process(key, **init_agent_home options)`: an agent home for that key, pointed at the manager."""
    agents: list[AgentProcess] = []

    def make(key: AgentKey, port: int | None = None, **options: object) -> AgentProcess:
        options.setdefault("notify_time", 1)
        options.setdefault("state_interval", 0.2)
        home = init_agent_home(
            tmp_path / f"agent-{key.id}",
            LOOPBACK,
            port or manager.port,
            key.line(),
            **options,  # type: ignore[arg-type]
        )
        agent = AgentProcess(home)
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        if agent.process is not None:
            agent.kill()
