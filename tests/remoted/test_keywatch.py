"""remoted's client.keys reader: no file yet is no agent yet, and bytes that are not UTF-8 do not stop it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from agentpulse.remoted import keywatch
from agentpulse.remoted.keywatch import KeysWatcher, read_keys
from agentpulse.wire.keys import KeysFile


def test_a_missing_keys_file_is_an_empty_one(tmp_path: Path) -> None:
    keys = read_keys(tmp_path / "client.keys")
    assert (keys.entries, keys.problems) == ([], [])


def test_bytes_that_are_not_utf8_are_replaced(tmp_path: Path) -> None:
    path = tmp_path / "client.keys"
    path.write_bytes(b"001 caf\xe9 any aaaa\n002 web-02 any bbbb\n")
    keys = read_keys(path)
    assert [(entry.id, entry.name) for entry in keys.active()] == [("001", "caf\ufffd"), ("002", "web-02")]


def test_a_read_in_flight_while_lines_are_applied_is_dropped_and_the_file_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "client.keys"
    path.write_text("001 web-01 any k1\n")
    seen: list[KeysFile] = []
    reads = 0

    async def scenario() -> None:
        watcher = KeysWatcher(path, 0.05, seen.append)
        await watcher.load()
        loop = asyncio.get_running_loop()

        def reading(where: Path) -> KeysFile:
            nonlocal reads
            reads += 1
            text = where.read_text()
            if reads == 1:  # enrolment writes and applies its line while this read is in flight
                where.write_text("001 web-01 any k1\n002 enrolled any k2\n")
                loop.call_soon_threadsafe(watcher.applied, None, None)
                time.sleep(0.1)
            return KeysFile.parse(text)

        monkeypatch.setattr(keywatch, "read_keys", reading)
        path.write_text("001 web-01 any k1\n003 by-hand any k3\n")
        task = asyncio.create_task(watcher.run())
        try:
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.05)
        finally:
            task.cancel()

    asyncio.run(scenario())
    assert reads == 2
    assert [key.id for key in seen[0].active()] == ["001", "002"]


def test_applied_skips_the_re_read_of_a_write_whose_previous_state_was_loaded(tmp_path: Path) -> None:
    watcher = KeysWatcher(tmp_path / "client.keys", 10, lambda keys: None)
    watcher.last = (1, 1, 1)
    watcher.applied((1, 1, 1), (2, 2, 2))
    assert (watcher.last, watcher.generation) == ((2, 2, 2), 1)
    watcher.applied((9, 9, 9), (3, 3, 3))  # someone else changed the file first: it is still read
    assert (watcher.last, watcher.generation) == ((2, 2, 2), 2)


def test_no_read_is_taken_while_a_writer_holds_the_file(tmp_path: Path) -> None:
    """Between enrolment's write and its applied(), a read would register the new agents first."""
    path = tmp_path / "client.keys"
    path.write_text("001 web-01 any k1\n")
    seen: list[KeysFile] = []

    async def scenario() -> None:
        watcher = KeysWatcher(path, 0.05, seen.append)
        await watcher.load()
        watcher.hold()
        path.write_text("001 web-01 any k1\n002 enrolled any k2\n")
        task = asyncio.create_task(watcher.run())
        try:
            await asyncio.sleep(0.4)
            assert seen == []  # held: every read was dropped
            watcher.applied(None, None)  # not the state it last read: the file is still read once
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.02)
        finally:
            task.cancel()

    asyncio.run(scenario())
    assert [key.id for key in seen[0].active()] == ["001", "002"]
    assert len(seen) == 1
