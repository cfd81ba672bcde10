"""TCP framing (docs/protocol.md): a 4-byte little-endian length, then that many bytes of payload.

The danger here is that anyone, before authentication, controls the length. So the length is checked the
moment its four bytes are in, before anything is buffered for it, and extracting frames costs O(bytes
received): consumed bytes are dropped in one slice per `feed()`, never one slice per frame.
"""

from __future__ import annotations

import struct

from agentpulse.wire.errors import Reason, WireError
from agentpulse.wire.secure import OS_MAXSTR

LENGTH = struct.Struct("<I")
LENGTH_SIZE = LENGTH.size


def encode_frame(payload: bytes) -> bytes:
    if len(payload) > OS_MAXSTR:
        raise ValueError(f"frame payload of {len(payload)} bytes exceeds {OS_MAXSTR}")
    return LENGTH.pack(len(payload)) + payload


def decode_length(header: bytes) -> int:
    """The payload length a 4-byte header announces; the caller checks it against its own maximum."""
    (size,) = LENGTH.unpack(header)
    return int(size)


class FrameDecoder:
    """Incremental decoder: feed it any chunking of the stream, get back whole payloads in order."""

    __slots__ = ("_buffer", "max_size")

    def __init__(self, max_size: int = OS_MAXSTR) -> None:
        self._buffer = bytearray()
        self.max_size = max_size

    def feed(self, data: bytes) -> list[bytes]:
        """Return every complete payload now available. Raises WireError(TOO_BIG) on an oversized length."""
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        offset = 0
        end = len(buffer)
        while end - offset >= LENGTH_SIZE:
            (size,) = LENGTH.unpack_from(buffer, offset)
            if size > self.max_size:
                del buffer[:]
                raise WireError(Reason.TOO_BIG, f"frame length {size} > {self.max_size}")
            if end - offset - LENGTH_SIZE < size:
                break
            start = offset + LENGTH_SIZE
            frames.append(bytes(buffer[start : start + size]))
            offset = start + size
        if offset:
            del buffer[:offset]
        return frames

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def clear(self) -> None:
        """Drop what is buffered (the connection is gone; its frame will never be read)."""
        self._buffer = bytearray()
