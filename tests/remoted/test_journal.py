"""The acknowledgement journal: real files, written as remoted does, read back as the next start does."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from agentpulse.remoted.journal import AckJournal, AckRecord, clear_journals, keep_for, read_journals
from agentpulse.status import Trigger


class Clock:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


def test_records_of_every_process_read_back_oldest_first(tmp_path: Path) -> None:
    manager_side, worker = AckJournal(tmp_path, 0), AckJournal(tmp_path, 3)
    manager_side.open()
    worker.open()
    worker.record(7, Trigger.STARTUP, 1_700_000_002.25)
    manager_side.record(5, Trigger.ALIVE, 1_700_000_001.5)
    manager_side.close()
    worker.close()
    assert read_journals(tmp_path) == [
        AckRecord(5, Trigger.ALIVE, 1_700_000_001.5),
        AckRecord(7, Trigger.STARTUP, 1_700_000_002.25),
    ]


def test_a_reopened_journal_keeps_what_its_predecessor_wrote(tmp_path: Path) -> None:
    first = AckJournal(tmp_path, 1)
    first.open()
    first.record(1, Trigger.STARTUP, 100.0)  # then the worker dies, without close()
    second = AckJournal(tmp_path, 1)
    second.open()
    second.record(2, Trigger.STARTUP, 101.0)
    second.close()
    assert [record.agent_id for record in read_journals(tmp_path)] == [1, 2]


def test_lines_that_do_not_parse_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "remoted-1.log").write_text(
        "1 100.000 startup\nnot a line\n2 nan startup\n3 inf alive\n4 101.0 shutdown\n-5 1.0 alive\n6 102.5 alive\n7 10"
    )
    assert read_journals(tmp_path) == [
        AckRecord(1, Trigger.STARTUP, 100.0),
        AckRecord(6, Trigger.ALIVE, 102.5),
    ]


def test_rotation_keeps_the_last_generation_and_drops_the_one_before(tmp_path: Path) -> None:
    clock = Clock()
    journal = AckJournal(tmp_path, 1, keep=60, monotonic=clock)
    journal.open()

    async def scenario() -> None:
        journal.record(1, Trigger.STARTUP, 1.0)
        clock.now += 61
        await journal._rotate()
        journal.record(2, Trigger.STARTUP, 2.0)
        assert [r.agent_id for r in read_journals(tmp_path)] == [1, 2]  # the rotated line is still kept
        clock.now += 61
        await journal._rotate()
        journal.record(3, Trigger.STARTUP, 3.0)

    asyncio.run(scenario())
    journal.close()
    assert [r.agent_id for r in read_journals(tmp_path)] == [2, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["remoted-1.log", "remoted-1.log.1"]


def test_sync_runs_only_after_a_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = AckJournal(tmp_path, 1)
    journal.open()
    synced: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(fd), real(fd)))

    async def scenario() -> None:
        await journal.sync()
        journal.record(1, Trigger.STARTUP, 1.0)
        await journal.sync()
        await journal.sync()

    asyncio.run(scenario())
    journal.close()
    assert len(synced) == 1


def test_clear_removes_every_journal_and_nothing_else(tmp_path: Path) -> None:
    for name in ("remoted-0.log", "remoted-1.log.1", "notes.txt"):
        (tmp_path / name).write_text("1 1.0 startup\n")
    clear_journals(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert read_journals(tmp_path / "missing") == []


def test_a_line_outlives_ten_flush_intervals_and_at_least_a_minute() -> None:
    assert keep_for(1.0) == 60.0
    assert keep_for(10.0) == 100.0
