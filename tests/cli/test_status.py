"""`agentpulse status`: counts per status and group, and the latest changes, plain when piped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agentpulse.paths import Home
from agentpulse.store.sqlite import schema


def _home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "ossec")
    home.create_layout()
    schema.create_global_db(home.global_db, "mgr", 1_700_000_000)
    db = schema.connect(home.global_db)
    with db:
        db.executemany(
            "INSERT INTO agent (id, name, date_add, connection_status, status_code) VALUES (?, ?, 0, ?, ?)",
            [
                (1, "web-01", "active", 0),
                (2, "web-02", "disconnected", 6),
                (3, "db-01", "never_connected", 0),
            ],
        )
        db.execute("INSERT INTO `group` (name) VALUES ('web')")
        db.executemany("INSERT INTO belongs (id_agent, id_group) VALUES (?, 1)", [(1,), (2,)])
        db.execute(
            "INSERT INTO agent_status_history (agent_id, seq, from_status, to_status, status_code, at) "
            "VALUES (2, 1, 'active', 'disconnected', 6, 1700000100)"
        )
    db.close()
    return home


def test_status_counts_groups_and_changes_without_colour_when_piped(tmp_path: Path) -> None:
    home = _home(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "agentpulse", "status", "--home", str(home.root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "\033[" not in out
    assert out.startswith("Agents: 3\n")
    assert "  Active                  1\n" in out
    assert "  Disconnected            1\n" in out
    assert "  Never connected         1\n" in out
    assert "  web: Active 1, Disconnected 1\n" in out
    assert "Shared files (members that have their group's merged.mg):\n" in out
    assert "  web: synced 0, not synced 2\n" in out
    assert (
        "002 web-02: Active -> Disconnected (connection lost and not re-opened within the grace time)" in out
    )


def test_status_colours_when_asked(tmp_path: Path) -> None:
    home = _home(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "agentpulse", "status", "--home", str(home.root), "--color", "always"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "\033[32mActive" in result.stdout


def test_status_without_a_database_says_so(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentpulse", "status", "--home", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "no database" in result.stderr


def test_status_shows_the_managers_client_keys_reload_counts(tmp_path: Path) -> None:
    home = _home(tmp_path)
    home.remoted_state.write_text(
        "# State file for agentpulse-remoted\npid='1'\nkeys_reloads_accepted='3'\nkeys_reloads_refused='2'\n"
        "keys_last_refused='1700000200'\nkeys_last_refusal='refused: 1 invalid line: line 3: NUL byte'\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "agentpulse", "status", "--home", str(home.root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "\nclient.keys reloads: 3 accepted, 2 refused\n" in result.stdout
    assert ": refused: 1 invalid line: line 3: NUL byte\n" in result.stdout
    assert "  last refused 20" in result.stdout
