"""The on-disk spool of one remoted process: agent events not yet acknowledged by JetStream, in order.

Every event is appended here before it is published, so a SIGKILL or a NATS outage loses nothing: the next
run (or the reconnect) replays from the acknowledged cursor, and JetStream's `Nats-Msg-Id` deduplication
drops what was published but not yet marked. Segment files `<seq>.seg` hold `[u32 length][u32 crc32]
[record]`; `cursor` holds the acknowledged position. The danger is size: `pending_bytes` is what the
caller compares with its limit (the spool itself never refuses an append); a torn or corrupt tail found
at open is cut off and logged.

Every record is written before it can be read, but while the reader keeps up (NATS takes the events as
fast as they come) it is not read back from the file: the records of the last appends are also kept in
memory (`_tail`, at most TAIL_MAX bytes), and `take()` hands them out from there. The file stays the
truth: the memory copy is dropped whenever the reader falls behind it (a lagging NATS, a rewind), and the
reader then goes on from the file.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

FRAME: Final = struct.Struct("<II")  # record length, crc32
CURSOR: Final = struct.Struct("<QQ")  # segment, offset of the first unacknowledged record
CURSOR_FILE: Final = "cursor"
SUFFIX: Final = ".seg"
READ_CHUNK: Final = 1 << 20
TAIL_MAX: Final = 16 << 20  # bytes of recently appended records also kept in memory for `take()`


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """Just past a record: (segment, offset)."""

    segment: int
    offset: int


@dataclass(slots=True)
class _Chunk:
    """The records of one append, in memory: they start at (segment, start) of the file."""

    segment: int
    start: int
    records: list[bytes]
    size: int  # their bytes in the file, frames included


class Spool:
    def __init__(self, directory: Path, segment_bytes: int = 16 << 20) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self._sizes: dict[int, int] = {}  # segment -> bytes in it (valid records only)
        self._acked = Position(0, 0)  # everything before this is in JetStream
        self._read = Position(0, 0)  # the next record to hand to the publisher
        self._write_fd = -1
        self._write_segment = 0
        self._read_fds: dict[int, int] = {}
        self._cursor_fd = -1
        self.pending_bytes = 0  # written and not acknowledged (what the limit is about)
        self._tail: deque[_Chunk] = deque()  # the last appends, contiguous, from the read position on
        self._tail_bytes = 0

    # -- open and close ---------------------------------------------------------------------------------

    def open(self) -> int:
        """Recover what a previous run left; returns how many bytes are waiting to be published."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o750)
        self._cursor_fd = os.open(self.directory / CURSOR_FILE, os.O_RDWR | os.O_CREAT, 0o640)
        raw = os.pread(self._cursor_fd, CURSOR.size, 0)
        segment, offset = CURSOR.unpack(raw) if len(raw) == CURSOR.size else (0, 0)
        segments = sorted(int(p.stem) for p in self.directory.glob(f"*{SUFFIX}") if p.stem.isdigit())
        for seq in segments:
            if seq < segment:
                self._path(seq).unlink(missing_ok=True)
        segments = [seq for seq in segments if seq >= segment]
        if not segments or segments[0] != segment:
            offset = 0
            segment = segments[0] if segments else segment
        for seq in segments:
            self._sizes[seq] = self._valid_length(seq, offset if seq == segment else 0)
        self._acked = self._read = Position(segment, offset)
        self._write_segment = segments[-1] if segments else segment
        self._sizes.setdefault(self._write_segment, 0)
        self._write_fd = self._open_for_append(self._write_segment)
        self.pending_bytes = sum(self._sizes.values()) - offset
        return self.pending_bytes

    def close(self) -> None:
        for fd in (self._write_fd, self._cursor_fd, *self._read_fds.values()):
            if fd >= 0:
                os.close(fd)
        self._write_fd = self._cursor_fd = -1
        self._read_fds.clear()

    def _path(self, seq: int) -> Path:
        return self.directory / f"{seq:012d}{SUFFIX}"

    def _open_for_append(self, seq: int) -> int:
        fd = os.open(self._path(seq), os.O_WRONLY | os.O_CREAT, 0o640)
        os.ftruncate(fd, self._sizes[seq])  # a torn tail found at open goes
        os.lseek(fd, 0, os.SEEK_END)
        return fd

    def _valid_length(self, seq: int, start: int) -> int:
        """The length of the segment's valid prefix, scanning from `start` (a known record boundary)."""
        data = self._path(seq).read_bytes()
        at = start
        while at + FRAME.size <= len(data):
            length, crc = FRAME.unpack_from(data, at)
            end = at + FRAME.size + length
            if end > len(data) or zlib.crc32(data[at + FRAME.size : end]) != crc:
                break
            at = end
        if at != len(data):
            log.warning(
                "Event spool %s: %d bytes at the end of segment %d are incomplete or corrupt, cut off",
                self.directory,
                len(data) - at,
                seq,
            )
        return at

    # -- writing ----------------------------------------------------------------------------------------

    def append(self, records: list[bytes]) -> int:
        """Append records (one write); returns the bytes written. Rolls to a new segment when full."""
        parts: list[bytes] = []
        for record in records:
            parts.append(FRAME.pack(len(record), zlib.crc32(record)))
            parts.append(record)
        data = b"".join(parts)
        view = memoryview(data)
        while view:
            written = os.write(self._write_fd, view)
            view = view[written:]
        segment, start = self._write_segment, self._sizes[self._write_segment]
        if self._tail or self._caught_up():
            if self._tail_bytes + len(data) <= TAIL_MAX:
                self._tail.append(_Chunk(segment, start, records, len(data)))
                self._tail_bytes += len(data)
            else:
                self._drop_tail()
        self._sizes[segment] += len(data)
        self.pending_bytes += len(data)
        if self._sizes[segment] >= self.segment_bytes:
            self._roll()
        return len(data)

    def _caught_up(self) -> bool:
        """True when the reader has read everything written so far (the end of a full segment counts as
        the start of the next, empty one)."""
        seq, offset = self._read.segment, self._read.offset
        write = self._write_segment
        if seq == write:
            return offset >= self._sizes.get(write, 0)
        return seq + 1 == write and not self._sizes.get(write, 0) and offset >= self._sizes.get(seq, 0)

    def _drop_tail(self) -> None:
        self._tail.clear()
        self._tail_bytes = 0

    def _roll(self) -> None:
        os.close(self._write_fd)
        self._write_segment += 1
        self._sizes[self._write_segment] = 0
        self._write_fd = self._open_for_append(self._write_segment)

    # -- reading and acknowledging ----------------------------------------------------------------------

    def take(self, max_records: int, max_bytes: int = 4 << 20) -> tuple[list[bytes], Position | None]:
        """The next records after the last one read, and the position just past the last of them (None
        when there are none): from memory while the reader keeps up, else from the file."""
        tail = self._tail
        if tail and self._at(tail[0]):
            records: list[bytes] = []
            taken = 0
            end: Position | None = None
            while tail and len(records) < max_records and taken < max_bytes:
                chunk = tail[0]
                room = max_records - len(records)
                if len(chunk.records) <= room:
                    tail.popleft()
                    self._tail_bytes -= chunk.size
                    records += chunk.records
                    taken += chunk.size
                    end = Position(chunk.segment, chunk.start + chunk.size)
                else:  # split it: the rest stays in memory, starting where the part taken ends
                    part = chunk.records[:room]
                    size = sum(map(len, part)) + FRAME.size * len(part)
                    chunk.records = chunk.records[room:]
                    chunk.start += size
                    chunk.size -= size
                    self._tail_bytes -= size
                    records += part
                    taken += size
                    end = Position(chunk.segment, chunk.start)
            assert end is not None
            self._read = end
            return records, end
        found = self.read(max_records, max_bytes)
        if not found:
            return [], None
        return [record for _, record in found], found[-1][0]

    def _at(self, chunk: _Chunk) -> bool:
        """True when the reader is where the chunk starts (the end of a full segment is the start of
        the next one)."""
        seq, offset = self._read.segment, self._read.offset
        if seq == chunk.segment:
            return offset == chunk.start
        return chunk.start == 0 and seq + 1 == chunk.segment and offset >= self._sizes.get(seq, 0)

    def read(self, max_records: int, max_bytes: int = 4 << 20) -> list[tuple[Position, bytes]]:
        """The next records after the last one read, with the position just past each."""
        out: list[tuple[Position, bytes]] = []
        taken = 0
        while len(out) < max_records and taken < max_bytes:
            seq, offset = self._read.segment, self._read.offset
            size = self._sizes.get(seq)
            if size is None:
                break
            if offset >= size:
                if seq >= self._write_segment:
                    break
                self._read = Position(seq + 1, 0)
                continue
            fd = self._read_fds.get(seq)
            if fd is None:
                fd = self._read_fds[seq] = os.open(self._path(seq), os.O_RDONLY)
            chunk = os.pread(fd, max(READ_CHUNK, min(size - offset, max_bytes)), offset)
            at = 0
            while at + FRAME.size <= len(chunk) and len(out) < max_records and taken < max_bytes:
                length, _ = FRAME.unpack_from(chunk, at)
                end = at + FRAME.size + length
                if end > len(chunk):
                    if at == 0:  # a record larger than the chunk: read it whole
                        chunk = os.pread(fd, end, offset)
                        continue
                    break
                out.append((Position(seq, offset + end), chunk[at + FRAME.size : end]))
                taken += end - at
                at = end
            self._read = Position(seq, offset + at)
        if self._tail and not self._at(self._tail[0]) and self._passed(self._tail[0]):
            self._drop_tail()  # read from the file past what memory holds: memory is stale now
        return out

    def _passed(self, chunk: _Chunk) -> bool:
        return self._read > Position(chunk.segment, chunk.start)

    def rewind(self) -> None:
        """Publishing failed: read again from the first unacknowledged record (from the file)."""
        self._read = self._acked
        self._drop_tail()

    def ack(self, upto: Position) -> None:
        """Everything up to `upto` is in JetStream: move the cursor, delete segments left behind."""
        if upto <= self._acked:
            return
        done = 0
        for seq in [seq for seq in self._sizes if seq < upto.segment]:
            done += self._sizes.pop(seq) - (self._acked.offset if seq == self._acked.segment else 0)
            fd = self._read_fds.pop(seq, None)
            if fd is not None:
                os.close(fd)
            self._path(seq).unlink(missing_ok=True)
        start = self._acked.offset if self._acked.segment == upto.segment else 0
        done += upto.offset - start
        self._acked = upto
        self._read = max(self._read, upto)
        self.pending_bytes -= done
        os.pwrite(self._cursor_fd, CURSOR.pack(upto.segment, upto.offset), 0)

    @property
    def unread(self) -> bool:
        """True when records are waiting to be read."""
        seq, offset = self._read.segment, self._read.offset
        return offset < self._sizes.get(seq, 0) or seq < self._write_segment
