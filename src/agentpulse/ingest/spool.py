"""The on-disk spool of one remoted process: agent events not yet acknowledged by JetStream, in order.

Every event is appended here before it is published, so a SIGKILL or a NATS outage loses nothing: the next
run (or the reconnect) replays from the acknowledged cursor, and JetStream's `Nats-Msg-Id` deduplication
drops what was published but not yet marked. Segment files `<seq>.seg` hold `[u32 length][u32 crc32]
[record]`; `cursor` holds the acknowledged position. The danger is size: `pending_bytes` is what the
caller compares with its limit (the spool itself never refuses an append); a torn or corrupt tail found
at open is cut off and logged.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Final

log = logging.getLogger(__name__)

FRAME: Final = struct.Struct("<II")  # record length, crc32
CURSOR: Final = struct.Struct("<QQ")  # segment, offset of the first unacknowledged record
CURSOR_FILE: Final = "cursor"
SUFFIX: Final = ".seg"
READ_CHUNK: Final = 1 << 20


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """Just past a record: (segment, offset)."""

    segment: int
    offset: int


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
        self._sizes[self._write_segment] += len(data)
        self.pending_bytes += len(data)
        if self._sizes[self._write_segment] >= self.segment_bytes:
            self._roll()
        return len(data)

    def _roll(self) -> None:
        os.close(self._write_fd)
        self._write_segment += 1
        self._sizes[self._write_segment] = 0
        self._write_fd = self._open_for_append(self._write_segment)

    # -- reading and acknowledging ----------------------------------------------------------------------

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
        return out

    def rewind(self) -> None:
        """Publishing failed: read again from the first unacknowledged record."""
        self._read = self._acked

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
