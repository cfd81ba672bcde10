"""Creating the fleet's keys: appended to client.keys whole, numbered on from an earlier run."""

from __future__ import annotations

from pathlib import Path

from agentpulse.simulator.keys import create_keys
from agentpulse.wire.keys import KeysFile


def test_create_keys_appends_sim_agents_atomically_and_continues_the_numbering(tmp_path: Path) -> None:
    path = tmp_path / "client.keys"
    path.write_text("001 web-01 any " + "a" * 64 + "\n")
    path.chmod(0o640)
    first = create_keys(path, 3)
    second = create_keys(path, 2)
    assert [key.name for key in first + second] == [f"sim-{n:06d}" for n in range(1, 6)]
    assert [key.id for key in first + second] == ["002", "003", "004", "005", "006"]
    keys = KeysFile.parse(path.read_text())
    assert next(entry.name for entry in keys.active()) == "web-01"
    assert all(entry.ip.text == "any" for entry in keys.active())
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["client.keys"]  # no temp file left
