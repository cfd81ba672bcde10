"""Agents listing two managers (the same client.keys, two homes, two ports) fail over in order: the Python
agent (`<client>` with two `<server>` blocks) and the simulator (`--manager` twice). Kill the one they use;
they reach the other, and come back round the list when that one dies too."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentpulse.agent.home import init_agent_home
from tests.e2e.harness import (
    LOOPBACK,
    AgentProcess,
    ManagerProcess,
    ManagerSettings,
    agentpulse_bin,
    wait_until,
)

FLEET = 50


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[ManagerProcess, ManagerProcess]]:
    """Two managers with one client.keys (as every node of a cluster has), not started."""
    settings = ManagerSettings(connection_grace=30)
    first = ManagerProcess(tmp_path / "node-a", settings)
    second = ManagerProcess(tmp_path / "node-b", settings)
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


def same_keys(source: ManagerProcess, target: ManagerProcess) -> None:
    target.home.create_layout()
    shutil.copyfile(source.home.client_keys, target.home.client_keys)


def test_the_agent_moves_to_its_next_server_and_back_round_the_list(
    pair: tuple[ManagerProcess, ManagerProcess], tmp_path: Path
) -> None:
    first, second = pair
    (key,) = first.add_agents(1)
    same_keys(first, second)
    first.start()
    second.start()
    home = init_agent_home(
        tmp_path / "agent",
        LOOPBACK,
        first.port,
        key.line(),
        notify_time=1,
        max_retries=1,
        retry_interval=0.5,
        state_interval=0,
        enrollment={"enabled": False},
        more_servers=[(LOOPBACK, second.port)],
    )
    agent = AgentProcess(home)
    agent.start()
    try:
        first.wait_for(key.number, "active", timeout=15)
        assert second.status(key.number)[0] == "never_connected"  # the first server in the list is used

        first.kill()
        killed = time.monotonic()
        second.wait_for(key.number, "active", timeout=15)
        assert time.monotonic() - killed < 10
        wait_until(lambda: f"Connected to the server ({LOOPBACK}:{second.port}/tcp)" in agent.output(), "log")

        # The second dies too, the first is back: the agent goes round the list to it.
        first.start()
        second.kill()
        first.wait_for(key.number, "active", timeout=15)
        output = agent.output()
        assert output.count(f"Connected to the server ({LOOPBACK}:{first.port}/tcp)") == 2
        assert "trying the next one" in output
    finally:
        agent.terminate()


def test_the_simulated_fleet_fails_over_to_the_second_manager(
    pair: tuple[ManagerProcess, ManagerProcess], tmp_path: Path
) -> None:
    first, second = pair
    first.add_agents(FLEET)
    same_keys(first, second)
    first.start()
    second.start()
    command = [
        agentpulse_bin("agentpulse"),
        "simulate",
        "--manager",
        f"{LOOPBACK}:{first.port}",
        "--manager",
        f"{LOOPBACK}:{second.port}",
        "--agents",
        str(FLEET),
        "--keys",
        str(first.home.client_keys),
        "--interval",
        "1",
        "--ramp",
        "1",
        "--duration",
        "60",  # ended by SIGINT once the second manager lists everyone
        "--progress",
        "never",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first.wait_for_all("active", FLEET, timeout=20)
        assert all(seen[0] == "never_connected" for seen in second.statuses().values())
        first.kill()
        took = second.wait_for_all("active", FLEET, timeout=20)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    summary = json.loads(stdout)
    assert summary["manager"] == f"{LOOPBACK}:{first.port},{LOOPBACK}:{second.port}"
    assert summary["handshakes_by_server"] == {
        f"{LOOPBACK}:{first.port}": FLEET,
        f"{LOOPBACK}:{second.port}": FLEET,
    }, stderr
    assert summary["failovers"] >= FLEET  # each agent moved once at least (its retry of the dead one failed)
    assert took < 15
