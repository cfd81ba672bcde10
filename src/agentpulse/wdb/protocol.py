"""The wazuh-db protocol, both ends (as Wazuh's wazuh-db speaks it): framing, request text, answers, paging.

Wire: wire/frames' 4-byte little-endian length, then at most OS_MAXSTR bytes, both ways. A request is read up
to its first NUL (the C client sends one); a trailing `\\n` is stripped and added back to the answer.
Requests are `<actor> <command> [args]`; answers `ok|due|err <payload>` with Wazuh's error texts; a paged
answer (`due`: ask again from the last id) stops at WDB_MAX_RESPONSE_SIZE = 65536 - 512 bytes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from agentpulse.wire.secure import OS_MAXSTR as OS_MAXSTR  # the largest body either way

WDB_MAX_RESPONSE_SIZE = OS_MAXSTR - 512
NEAR = 32  # "near '%.32s'"
UNIX_PATH_MAX = 107  # sun_path holds 108 bytes with the NUL
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
TOO_LONG = b"err Response too long"
T = TypeVar("T")
Reply = str


class WdbError(Exception):
    """An `err` answer; the message is the payload."""


def dumps(value: object) -> str:
    """JSON the way cJSON_PrintUnformatted writes it: no spaces, UTF-8 as is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def near(text: str) -> str:
    return text[:NEAR]


def atoi(text: str) -> int:
    """C's atoi(): leading blanks, an optional sign, digits; 0 when there are none. Clamped to 64 bits
    (strtol saturates too), so no number a client writes can overflow an SQLite binding."""
    match = re.match(r"\s*([+-]?\d{1,30})", text)
    return max(INT64_MIN, min(INT64_MAX, int(match.group(1)))) if match else 0


def split_request(body: bytes) -> tuple[str, bool]:
    """The query text, and whether the answer gets a trailing `\\n` (the request ended with one)."""
    body = body.split(b"\0", 1)[0]  # a C string ends at its first NUL, the terminator included
    terminal = body.endswith(b"\n")
    if terminal:
        body = body[:-1]
    return body.decode("utf-8", "replace"), terminal


def answer_body(answer: Reply, terminal: bool) -> bytes:
    """The bytes of an answer: with the request's `\\n` back, and never more than a frame holds."""
    data = (answer + "\n" if terminal else answer).encode()
    return TOO_LONG if len(data) > OS_MAXSTR else data


def page(items: Iterable[Any], limit: int = WDB_MAX_RESPONSE_SIZE) -> tuple[str, str, list[Any]]:
    """As many items as fit in `limit` bytes of JSON array: ("ok" or "due", the array, the items)."""
    parts: list[str] = []
    taken: list[Any] = []
    size = 2
    for item in items:
        text = dumps(item)
        length = len(text.encode()) + (1 if parts else 0)
        if size + length > limit:
            return "due", "[" + ",".join(parts) + "]", taken
        parts.append(text)
        taken.append(item)
        size += length
    return "ok", "[" + ",".join(parts) + "]", taken


def rows_to_fill(min_item_size: int, limit: int = WDB_MAX_RESPONSE_SIZE) -> int:
    """More rows than one page() can hold when each item takes at least `min_item_size` bytes of JSON (and
    a comma): asking the store for this many is enough for page() to tell `ok` from `due`."""
    return limit // (min_item_size + 1) + 1


def batched(
    fetch: Callable[[int, int], list[T]], after: int, key: Callable[[T], int], size: int
) -> Iterator[T]:
    """Every row `fetch(after, size)` gives, batch after batch from the last key, read only as consumed."""
    while True:
        batch = fetch(after, size)
        yield from batch
        if len(batch) < size:
            return
        after = key(batch[-1])


@contextlib.contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """An address for bind()/connect() even when the path is longer than sun_path allows (Linux: through
    the /proc/self/fd entry of the directory, held open meanwhile)."""
    text = str(path)
    if len(text.encode()) <= UNIX_PATH_MAX:
        yield text
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)
