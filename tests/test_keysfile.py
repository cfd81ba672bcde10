"""client.keys on disk: lookups replace what is not UTF-8, edits keep every byte, writes are atomic 0640."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agentpulse.keysfile import KeysLock, KeysRead, lock_path, read_keys_file, write_keys_file
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


def test_write_fsyncs_the_file_and_its_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_keys_file(tmp_path / "client.keys", KeysFile(["001 web-01 any k"]))
    assert synced == ["file", "dir"]


def test_the_lock_is_a_file_beside_the_keys_and_excludes_another_holder(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "client.keys"
    assert lock_path(path) == tmp_path / "etc" / ".client.keys.lock"
    child = (
        "import sys, time; from pathlib import Path; from agentpulse.keysfile import KeysLock\n"
        "with KeysLock(Path(sys.argv[1])): print(time.time())\n"
    )
    with KeysLock(path) as lock:
        assert lock.held
        process = subprocess.Popen(
            [sys.executable, "-c", child, str(path)], stdout=subprocess.PIPE, text=True
        )
        time.sleep(1.0)
        assert process.poll() is None  # waiting for the lock
        released = time.time()
    out, _ = process.communicate(timeout=20)
    assert float(out) >= released
    assert not lock.held


def test_the_lock_cannot_be_taken_twice_by_one_holder(tmp_path: Path) -> None:
    lock = KeysLock(tmp_path / "client.keys")
    with lock, pytest.raises(RuntimeError):
        lock.acquire()
    lock.release()  # releasing a released lock is harmless
