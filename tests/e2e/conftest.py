"""Fixtures for end-to-end tests: real agent processes, stopped whatever the test does (the manager
fixture is shared, in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentpulse.agent.home import init_agent_home
from agentpulse.wire.keys import AgentKey
from tests.e2e.harness import LOOPBACK, AgentFactory, AgentProcess, ManagerProcess


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
