"""The acknowledgement journal: which agents remoted acknowledged, written before the ack leaves.

remoted acks a startup at once, and the store commits it within `flush_interval`. A manager killed in
between (kill -9, the OOM killer) would leave an agent that was told "connected" looking never connected.
So each remoted process appends one line per acknowledged startup (and per agent's first acknowledged
keep-alive in the process) to its own file, with one write(2) before the ack: the kernel keeps it whatever
happens to the process. It is fdatasync'd once a second, off the loop (a machine crash loses that second,
as global.db's synchronous=NORMAL does), rotated so a line is kept for at least `keep` seconds, read back
and replayed by the next manager start (`read_journals`, `Store.restore_acks`), and cleared once that is
committed. Danger: the write is on the hot path of a ramp; it costs a few microseconds per startup.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agentpulse.ratelimit import RateLimitedLog
from agentpulse.status import Trigger

log = logging.getLogger(__name__)

SYNC_INTERVAL = 1.0  # seconds between fdatasyncs (only when something was written)
MIN_KEEP = 60.0  # a line stays at least this long (or ten flush intervals) before its file is rotated away
SUFFIX = ".log"
PREVIOUS = ".log.1"
JOURNALED = (Trigger.STARTUP, Trigger.ALIVE)
_BY_VALUE = {trigger.value: trigger for trigger in JOURNALED}


@dataclass(frozen=True, slots=True)
class AckRecord:
    """One acknowledgement: the agent, what it was told yes to, when (wall clock, as the store uses)."""

    agent_id: int
    trigger: Trigger
    at: float


def keep_for(flush_interval: float) -> float:
    """How long a journal line must outlive its ack: well beyond the store's commit interval."""
    return max(MIN_KEEP, 10 * flush_interval)


class AckJournal:
    """The journal of one remoted process (`index` 0 in the manager, 1..N for workers)."""

    def __init__(
        self,
        directory: Path,
        index: int,
        keep: float = MIN_KEEP,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.current = directory / f"remoted-{index}{SUFFIX}"
        self.previous = directory / f"remoted-{index}{PREVIOUS}"
        self.keep = keep
        self.monotonic = monotonic
        self._fd = -1
        self._opened_at = 0.0
        self._dirty = False
        self.records = 0
        self.warn = RateLimitedLog(log)

    def open(self) -> None:
        """Append to this process's file (a restarted worker keeps what its predecessor wrote)."""
        self.current.parent.mkdir(parents=True, exist_ok=True)
        self._fd = _open_append(self.current)
        self._opened_at = self.monotonic()

    def record(self, agent_id: int, trigger: Trigger, at: float) -> None:
        """Before the ack is sent. A line is far below PIPE_BUF: one write, never torn by a kill."""
        if self._fd < 0:
            return
        try:
            os.write(self._fd, f"{agent_id} {at:.3f} {trigger.value}\n".encode())
        except OSError as error:
            # The ack still goes out: the journal narrows a window, it must not close the door.
            self.warn.warning(
                "journal", "cannot write the acknowledgement journal %s: %s", self.current, error
            )
            return
        self._dirty = True
        self.records += 1

    async def run(self) -> None:
        """Sync once a second when written to; rotate once the file is `keep` seconds old."""
        while True:
            await asyncio.sleep(SYNC_INTERVAL)
            await self.sync()
            if self.monotonic() - self._opened_at >= self.keep:
                await self._rotate()

    async def sync(self) -> None:
        fd = self._fd
        if fd < 0 or not self._dirty:
            return
        self._dirty = False
        try:
            await asyncio.to_thread(os.fdatasync, fd)
        except OSError as error:
            self.warn.warning(
                "journal-sync", "cannot sync the acknowledgement journal %s: %s", self.current, error
            )

    async def _rotate(self) -> None:
        """current -> previous (the old previous, at least `keep` seconds older, goes), a fresh current.

        The rename and open run on a thread; lines written meanwhile land in the renamed file, still kept.
        """
        old = self._fd
        if old < 0:
            return
        try:
            new = await asyncio.to_thread(self._renamed_and_reopened)
        except OSError as error:
            self.warn.warning(
                "journal-rotate", "cannot rotate the acknowledgement journal %s: %s", self.current, error
            )
            self._opened_at = self.monotonic()
            return
        self._fd, self._opened_at = new, self.monotonic()
        if self._dirty:
            self._dirty = False
            await asyncio.to_thread(_sync_and_close, old)
        else:
            await asyncio.to_thread(os.close, old)

    def _renamed_and_reopened(self) -> int:
        os.replace(self.current, self.previous)
        return _open_append(self.current)

    def close(self) -> None:
        """At a clean stop: the store commits everything, and the manager clears the journal after."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _open_append(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)


def _sync_and_close(fd: int) -> None:
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def read_journals(directory: Path) -> list[AckRecord]:
    """Every journal line in `directory` (all remoted processes of the last run), oldest first.

    Blocking. Lines that do not parse (a file edited by hand, a disk error) are skipped and counted.
    """
    records: list[AckRecord] = []
    bad = 0
    for path in journal_files(directory):
        try:
            text = path.read_text(encoding="ascii", errors="replace")
        except OSError as error:
            log.warning("cannot read the acknowledgement journal %s: %s", path, error)
            continue
        for line in text.splitlines():
            record = _parse(line)
            if record is None:
                bad += 1
            else:
                records.append(record)
    if bad:
        log.warning(
            "acknowledgement journals in %s: %d lines skipped (not '<id> <time> <trigger>')", directory, bad
        )
    records.sort(key=lambda record: record.at)
    return records


def clear_journals(directory: Path) -> None:
    """Blocking: once what they recorded is committed, the next start has nothing to replay."""
    for path in journal_files(directory):
        path.unlink(missing_ok=True)


def journal_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(
        path for path in directory.iterdir() if path.name.endswith((SUFFIX, PREVIOUS)) and path.is_file()
    )


def _parse(line: str) -> AckRecord | None:
    fields = line.split(" ")
    if len(fields) != 3 or not fields[0].isdigit():
        return None
    trigger = _BY_VALUE.get(fields[2])
    try:
        at = float(fields[1])
    except ValueError:
        return None
    if trigger is None or not math.isfinite(at):
        return None
    return AckRecord(int(fields[0]), trigger, at)
