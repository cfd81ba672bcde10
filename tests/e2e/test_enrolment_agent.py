"""The Python agent enrols by itself (reference 14.6): with an empty client.keys at start, and when the
manager keeps refusing its key; and `agentpulse enrol`, the agent-auth of agentpulse."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentpulse.agent.home import init_agent_home
from agentpulse.wire.keys import KeysFile
from tests.e2e.harness import LOOPBACK, AgentProcess, ManagerProcess, ManagerSettings
from tests.timing import within_aim


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        if agent.process is not None:
            agent.kill()


def agent_home(
    tmp_path: Path, manager: ManagerProcess, key_line: str | None, **enrollment: object
) -> AgentProcess:
    home = init_agent_home(
        tmp_path / "agent",
        LOOPBACK,
        manager.port,
        key_line,
        notify_time=1,
        state_interval=0.2,
        max_retries=1,
        retry_interval=0.2,
        enrollment={"port": manager.auth_port, "delay_after_enrollment": 0.1, **enrollment},
    )
    return AgentProcess(home)


def the_agent_key(agent: AgentProcess) -> str:
    return agent.home.client_keys.read_text()


def test_an_agent_with_an_empty_client_keys_enrols_connects_and_is_active_within_2_s(
    tmp_path: Path, manager: ManagerProcess, agents: list[AgentProcess]
) -> None:
    manager.settings = ManagerSettings(auth="<purge>yes</purge>")
    agent = agent_home(tmp_path, manager, None, agent_name="py-agent-01", groups="default")
    agents.append(agent)
    manager.start()
    started = time.monotonic()
    agent.start()
    manager.wait_for(1, "active", 0, timeout=10)
    within_aim("enrolled, connected and active", time.monotonic() - started, 2.0)
    (key,) = KeysFile.parse(the_agent_key(agent)).active()
    assert (key.id, key.name, key.ip.text) == ("001", "py-agent-01", "any")
    assert the_agent_key(agent) == manager.home.client_keys.read_text()
    assert "Valid key received" in agent.output()


def test_an_agent_whose_key_is_refused_enrols_again_and_connects_with_its_new_key(
    tmp_path: Path, manager: ManagerProcess, agents: list[AgentProcess]
) -> None:
    manager.settings = ManagerSettings(auth="")
    stale = "007 py-agent-02 any 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    agent = agent_home(tmp_path, manager, stale, agent_name="py-agent-02")
    agents.append(agent)
    manager.start()
    agent.start()
    manager.wait_for(1, "active", 0, timeout=15)
    (key,) = KeysFile.parse(the_agent_key(agent)).active()
    assert (key.id, key.name) == ("001", "py-agent-02")


def test_enrolment_disabled_without_a_key_is_a_setup_error(tmp_path: Path, manager: ManagerProcess) -> None:
    agent = agent_home(tmp_path, manager, None, enabled=False)
    result = subprocess.run(
        [sys.executable, "-m", "agentpulse", "agent", "--home", str(agent.home.root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "no active agent key" in result.stderr + (agent.home.root / "logs" / "ossec.log").read_text()


def test_agentpulse_enrol_writes_the_key_of_an_agent_home(tmp_path: Path, manager: ManagerProcess) -> None:
    manager.settings = ManagerSettings(auth="<use_password>yes</use_password>")
    manager.home.create_layout()
    (manager.home.etc / "authd.pass").write_text("s3cret\n")
    (manager.home.etc / "shared" / "linux").mkdir(parents=True)
    manager.start()
    home = tmp_path / "agent"
    command = [
        sys.executable,
        "-m",
        "agentpulse",
        "enrol",
        "--manager",
        LOOPBACK,
        "--port",
        str(manager.auth_port),
        "--home",
        str(home),
        "--name",
        "cli-01",
        "--groups",
        "default,linux",
    ]
    refused = subprocess.run([*command, "--password", "wrong"], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert "Invalid password. Unable to add agent (from manager)" in refused.stderr
    done = subprocess.run([*command, "--password", "s3cret"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    (key,) = KeysFile.parse((home / "etc" / "client.keys").read_text()).active()
    assert (key.id, key.name) == ("001", "cli-01")
    assert "Valid key received" in done.stderr
    manager.wait_for(1, "never_connected", 0)
    assert manager.query("SELECT `group` FROM agent WHERE id = 1")[0][0] == "default,linux"
