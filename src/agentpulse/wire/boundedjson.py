"""JSON an agent (or a manager) sends inside a control message, bounded in size and depth before parsing.

The danger: `json.loads` recurses once per nesting level, so `[[[[...` raises RecursionError (not
ValueError) and a few kilobytes of brackets cost a full traceback per message. `loads()` refuses text
longer than `max_size` or nested deeper than `max_depth` with WireError(JSON_LIMIT) before parsing; the
depth pre-scan costs two C-speed counts, and only text with many brackets pays for a scan of them.
"""

from __future__ import annotations

import json
import re
from typing import Final

from agentpulse.wire.errors import Reason, WireError

MAX_SIZE: Final = 16384  # characters: a startup is ~25, a getstate answer a few hundred
MAX_DEPTH: Final = 32  # the startup is depth 1, a getstate answer depth 2
_OPENERS: Final = frozenset("[{")
# The characters that matter for nesting: brackets, and the quotes and backslashes that hide them.
_STRUCTURAL: Final = re.compile(r'[\[\]{}"\\]')


def too_deep(text: str, limit: int) -> bool:
    """True when `text` nests brackets deeper than `limit` outside strings (as `json.loads` would recurse)."""
    if text.count("[") + text.count("{") <= limit:
        return False  # found at C speed: even if every opener were inside the one before
    return nesting_depth(text, limit) > limit


def nesting_depth(text: str, limit: int) -> int:
    """The deepest bracket nesting of `text` outside strings; the scan stops once it passes `limit`.

    Only brackets, quotes and backslashes are visited. A closer without its opener makes the text invalid
    JSON there and the parser stops at it; the scan goes on from the lower base, so it never counts less
    than the parser would recurse.
    """
    depth = deepest = 0
    in_string = False
    escaped_at = -1  # the position right after a backslash inside a string
    for match in _STRUCTURAL.finditer(text):
        char, position = match.group(), match.start()
        if in_string:
            if position == escaped_at:
                continue
            if char == "\\":
                escaped_at = position + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in _OPENERS:
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif char != "\\":
            depth -= 1
    return deepest


def loads(text: str, *, max_size: int = MAX_SIZE, max_depth: int = MAX_DEPTH) -> object:
    """`json.loads` within bounds. Raises WireError(JSON_LIMIT) when too long or too deep, ValueError
    when it is not JSON (as `json.loads` does)."""
    if len(text) > max_size:
        raise WireError(Reason.JSON_LIMIT, f"{len(text)} characters > {max_size}")
    if too_deep(text, max_depth):
        raise WireError(Reason.JSON_LIMIT, f"nested deeper than {max_depth}")
    return json.loads(text)
