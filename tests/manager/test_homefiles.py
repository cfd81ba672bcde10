"""The state file and the warning for key files every user may read."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from agentpulse.config import Config
from agentpulse.manager.homefiles import warn_exposed_files, write_state_file
from agentpulse.paths import Home
from agentpulse.remoted.keyguard import ReloadCounters


def test_the_state_file_names_this_process_its_listeners_and_the_last_refusal_without_its_quotes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "agentpulse-remoted.state"
    reloads = ReloadCounters(
        accepted=2, refused=1, last_refused_at=1700000000.5, last_refusal="it's 'broken'"
    )
    write_state_file(path, 1699999999, ["0.0.0.0:1514/tcp", "0.0.0.0:1514/udp"], reloads)
    lines = path.read_text().splitlines()
    assert lines[0] == "# State file for agentpulse-remoted"
    assert lines[1:] == [
        f"pid='{os.getpid()}'",
        "started='1699999999'",
        "listen='0.0.0.0:1514/tcp 0.0.0.0:1514/udp'",
        "keys_reloads_accepted='2'",
        "keys_reloads_refused='1'",
        "keys_last_refused='1700000000'",
        'keys_last_refusal=\'it"s "broken"\'',
    ]
    assert not path.with_suffix(".tmp").exists()  # written aside, then renamed over


def test_a_world_readable_client_keys_is_warned_about_and_a_private_one_is_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = Home(tmp_path)
    home.create_layout()
    home.client_keys.write_text("001 agent any " + "a" * 64 + "\n")
    home.client_keys.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="agentpulse.manager.homefiles"):
        warn_exposed_files(home, Config())
    assert [str(home.client_keys) in r.getMessage() for r in caplog.records] == [True]
    caplog.clear()
    home.client_keys.chmod(0o640)
    with caplog.at_level(logging.WARNING, logger="agentpulse.manager.homefiles"):
        warn_exposed_files(home, Config())
    assert caplog.records == []
