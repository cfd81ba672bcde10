"""The keys watcher: it reads client.keys strictly (no file yet is no agent yet; bytes that are not UTF-8
are an invalid line), and asks for a reload when the file changes or on demand, never otherwise."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from agentpulse.keysfile import check_keys_file
from agentpulse.remoted.keywatch import KeysWatcher

KEY = "ab" * 32


def test_a_missing_keys_file_is_an_empty_valid_one(tmp_path: Path) -> None:
    checked = check_keys_file(tmp_path / "client.keys")
    assert (checked.keys.entries, checked.problems) == ([], ())


def test_bytes_that_are_not_utf8_are_an_invalid_line(tmp_path: Path) -> None:
    path = tmp_path / "client.keys"
    path.write_bytes(f"001 web-01 any {KEY}\n002 caf\xe9 any {KEY}\n".encode("latin-1"))
    checked = check_keys_file(path)
    assert [(p.line_no, p.reason) for p in checked.problems] == [(2, "bytes that are not UTF-8")]


def test_a_file_that_cannot_be_read_is_refused_whole(tmp_path: Path) -> None:
    path = tmp_path / "client.keys"
    path.mkdir()  # reading a directory fails as an unreadable file would
    checked = check_keys_file(path)
    assert [p.line_no for p in checked.problems] == [0]
    assert checked.problems[0].reason.startswith(f"cannot read {path}: ")


def test_the_watcher_reloads_on_a_change_and_on_trigger_only(tmp_path: Path) -> None:
    path = tmp_path / "client.keys"
    path.write_text(f"001 web-01 any {KEY}\n")

    async def scenario() -> list[int]:
        seen: list[int] = []

        async def reload() -> None:
            seen.append(len((await watcher.load()).keys.entries))

        watcher = KeysWatcher(path, 0.05, reload)
        await watcher.load()
        task = asyncio.create_task(watcher.run())
        await asyncio.sleep(0.3)  # unchanged: no reload
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"001 web-01 any {KEY}\n002 web-02 any {KEY}\n")
        os.replace(tmp, path)
        await asyncio.sleep(0.3)
        watcher.trigger()
        await asyncio.sleep(0.3)
        task.cancel()
        return seen

    assert asyncio.run(scenario()) == [2, 2]


async def _nothing() -> None:
    return None


def test_applied_skips_the_re_read_of_a_write_whose_previous_state_was_loaded(tmp_path: Path) -> None:
    watcher = KeysWatcher(tmp_path / "client.keys", 10, _nothing)
    watcher.last = (1, 1, 1)
    watcher.applied((1, 1, 1), (2, 2, 2))
    assert (watcher.last, watcher.generation) == ((2, 2, 2), 1)
    watcher.applied((9, 9, 9), (3, 3, 3))  # someone else changed the file first: it is still read
    assert (watcher.last, watcher.generation) == ((2, 2, 2), 2)


def test_a_settled_read_waits_for_the_writer_and_sees_its_lines(tmp_path: Path) -> None:
    """Between enrolment's hold() and applied(), a reload would take the file without the new agents
    (or register them before enrolment does): load_settled() waits, and a hold since makes it stale."""
    path = tmp_path / "client.keys"
    path.write_text(f"001 web-01 any {KEY}\n")

    async def scenario() -> tuple[int, bool, bool]:
        watcher = KeysWatcher(path, 10, _nothing)
        watcher.hold()
        reading = asyncio.create_task(watcher.load_settled())
        await asyncio.sleep(0.2)
        assert not reading.done()  # held: no read yet
        path.write_text(f"001 web-01 any {KEY}\n002 enrolled any {KEY}\n")
        watcher.applied(None, None)
        checked, generation = await asyncio.wait_for(reading, 5)
        fresh = watcher.stale(generation)
        watcher.hold()
        return len(checked.keys.entries), fresh, watcher.stale(generation)

    assert asyncio.run(scenario()) == (2, False, True)
