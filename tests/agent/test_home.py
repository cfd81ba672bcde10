"""The agent's client.keys: exactly one active key, and every other case is an AgentSetupError naming it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from agentpulse.agent.home import AgentSetupError, load_agent_key


def test_the_one_active_key_is_read_and_bytes_that_are_not_utf8_are_replaced(tmp_path: Path) -> None:
    path = tmp_path / "client.keys"
    path.write_bytes(b"# caf\xe9\n001 web-01 any aaaa\n002 !old any bbbb\n")
    key = load_agent_key(path)
    assert (key.id, key.name, key.key) == ("001", "web-01", "aaaa")


def test_a_missing_file_says_to_import_the_key(tmp_path: Path) -> None:
    path = tmp_path / "client.keys"
    with pytest.raises(AgentSetupError, match=rf"^{re.escape(str(path))}: file not found \(import"):
        load_agent_key(path)


def test_an_unreadable_path_is_a_setup_error(tmp_path: Path) -> None:
    with pytest.raises(AgentSetupError, match=rf"^{re.escape(str(tmp_path))}: cannot read: "):
        load_agent_key(tmp_path)


def test_no_active_key_or_several_are_setup_errors(tmp_path: Path) -> None:
    path = tmp_path / "client.keys"
    path.write_text("001 !gone any aaaa\nxyz broken\n")
    with pytest.raises(AgentSetupError, match=r"no active agent key \(line 2: "):
        load_agent_key(path)
    path.write_text("001 a any aaaa\n002 b any bbbb\n")
    with pytest.raises(AgentSetupError, match=r"2 active keys \(ids 001, 002\)"):
        load_agent_key(path)


def test_an_agent_home_lists_its_servers_in_order(tmp_path: Path) -> None:
    from agentpulse.agent.config import ServerAddress, load_agent_config
    from agentpulse.agent.home import init_agent_home

    home = init_agent_home(
        tmp_path, "127.0.0.1", 1514, None, max_retries=2, more_servers=[("10.0.0.2", 1600), ("node-c", 1514)]
    )
    config = load_agent_config(home.ossec_conf)
    assert config is not None
    assert config.servers == (
        ServerAddress("127.0.0.1", 1514, max_retries=2),
        ServerAddress("10.0.0.2", 1600, max_retries=2),
        ServerAddress("node-c", 1514, max_retries=2),
    )
