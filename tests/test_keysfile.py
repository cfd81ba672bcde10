"""client.keys on disk: lookups replace what is not UTF-8, edits keep every byte, writes are atomic 0640."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from agentpulse.keysfile import KeysRead, read_keys_file, write_keys_file
from agentpulse.wire.keys import KeysFile

RAW = b"# caf\xe9 by hand\r\n001 web-01 any aaaa\n002 db-02 10.0.0.2 bbbb\n"


def test_a_missing_file_raises_unless_missing_ok(tmp_path: Path) -> None:
    path = tmp_path / "client.keys"
    with pytest.raises(FileNotFoundError):
        read_keys_file(path)
    for mode in KeysRead:
        keys = read_keys_file(path, mode=mode, missing_ok=True)
        assert (keys.entries, keys.problems, keys.render()) == ([], [], "")


def test_other_read_errors_are_raised_even_with_missing_ok(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        read_keys_file(tmp_path, missing_ok=True)


def test_lookup_replaces_bytes_that_are_not_utf8_and_splits_lines_like_splitlines(tmp_path: Path) -> None:
    path = tmp_path / "client.keys"
    path.write_bytes(RAW)
    keys = read_keys_file(path)
    assert [entry.id for entry in keys.active()] == ["001", "002"]
    assert keys.render() == "# caf\ufffd by hand\n001 web-01 any aaaa\n002 db-02 10.0.0.2 bbbb\n"


def test_edit_keeps_every_byte_through_a_write(tmp_path: Path) -> None:
    path = tmp_path / "client.keys"
    path.write_bytes(RAW)
    keys = read_keys_file(path, mode=KeysRead.EDIT)
    assert [entry.id for entry in keys.active()] == ["001", "002"]
    keys.remove("002")
    write_keys_file(path, keys)
    assert path.read_bytes() == RAW.replace(b"002 db-02", b"002 !db-02")


def test_write_creates_the_directory_mode_0640_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "client.keys"
    keys = KeysFile([])
    keys.add("web-01", key="k")
    write_keys_file(path, keys)
    assert path.read_text() == "001 web-01 any k\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [child.name for child in path.parent.iterdir()] == ["client.keys"]
