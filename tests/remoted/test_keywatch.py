"""remoted's client.keys reader: no file yet is no agent yet, and bytes that are not UTF-8 do not stop it."""

from __future__ import annotations

from pathlib import Path

from agentpulse.remoted.keywatch import read_keys


def test_a_missing_keys_file_is_an_empty_one(tmp_path: Path) -> None:
    keys = read_keys(tmp_path / "client.keys")
    assert (keys.entries, keys.problems) == ([], [])


def test_bytes_that_are_not_utf8_are_replaced(tmp_path: Path) -> None:
    path = tmp_path / "client.keys"
    path.write_bytes(b"001 caf\xe9 any aaaa\n002 web-02 any bbbb\n")
    keys = read_keys(path)
    assert [(entry.id, entry.name) for entry in keys.active()] == [("001", "caf\ufffd"), ("002", "web-02")]
