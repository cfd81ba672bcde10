"""`agentpulse keys reload`: without a running manager it says so and exits 2; it takes --home and --force."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agentpulse.paths import Home


def _keys(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentpulse", "keys", *args], capture_output=True, text=True, timeout=60
    )


def test_reload_without_a_manager_exits_2_and_names_the_socket(tmp_path: Path) -> None:
    home = Home(tmp_path / "ossec")
    home.create_layout()
    result = _keys("reload", "--force", "--home", str(home.root))
    assert result.returncode == 2
    assert f"no manager answers on {home.wdb_socket}" in result.stderr


def test_keys_needs_a_command() -> None:
    result = _keys()
    assert result.returncode == 2 and "required: COMMAND" in result.stderr
