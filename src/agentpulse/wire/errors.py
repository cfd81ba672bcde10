"""The one error type of the codec: every failure to read bytes from an agent raises WireError.

A `Reason`'s value is the words an operator reads in the log; the detail gives the specifics. Nothing
else may leave the codec on bad input.
"""

from __future__ import annotations

import enum


class Reason(enum.Enum):
    """Why a frame or message was refused. The value is the words an operator reads in the log."""

    TOO_BIG = "frame too big"
    EMPTY = "empty message"
    BAD_HEADER = "bad header"
    UNKNOWN_AGENT = "unknown agent"
    IP_NOT_ALLOWED = "source ip not allowed"
    WRONG_KEY = "wrong key"
    BAD_PADDING = "bad padding"
    CORRUPT = "corrupt payload"
    CHECKSUM_MISMATCH = "checksum mismatch"
    DUPLICATE_COUNTER = "duplicate counter"
    OLD_COUNTER = "counter older than the last one"
    REPLAYED_COUNTER = "replayed counter"  # not newer than the agent's highest, on a new connection
    NO_ADMISSION = "no admission answer"  # a worker's question to the manager went unanswered
    BAD_CONTROL = "invalid control message"
    KEY_IN_USE = "agent key already in use"
    AGENT_MISMATCH = "agent mismatch"  # a connection bound to one agent sent as another
    BAD_KEYS_LINE = "invalid client.keys line"
    JSON_LIMIT = "JSON too large or too deeply nested"  # refused before parsing (wire/boundedjson.py)
    TOO_MANY_PINGS = "too many pings before authentication"  # free to send, not free to answer


class WireError(Exception):
    """A message or frame that cannot be accepted. `reason` says why, `detail` gives the specifics."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
