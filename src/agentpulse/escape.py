"""Agent text at the output boundary: `for_terminal`, `for_log`, `for_html` and `json_safe`.

Agents choose their uname, version and labels (names come from client.keys, read with surrogateescape); the
store keeps them as sent, capped at `wire.control.FIELD_CAP`. The danger is at the sinks: an ESC sequence
runs on the operator's terminal, a newline or CR forges a log line, a lone surrogate makes a UTF-8 writer
raise. Every sink that prints such text passes it through one of these functions, so the rule lives here.
"""

from __future__ import annotations

import html
import re
from typing import Final

# What is escaped, everywhere:
# - C0 controls U+0000-U+001F (NUL, TAB, LF, CR, ESC, and FS/GS/RS, which str.splitlines() breaks on),
#   DEL U+007F and C1 controls U+0080-U+009F (NEL; U+009B is CSI, a terminal's escape sequence in one char);
# - U+2028/U+2029, line and paragraph separators to many viewers;
# - the bidirectional controls (U+061C, U+200E/F, U+202A-U+202E, U+2066-U+2069), which reorder what
#   follows them on screen, so a line can read other than it is;
# - lone surrogates U+D800-U+DFFF (undecodable bytes of client.keys, JSON `\ud800` escapes), which no
#   UTF-8 encoder accepts.
# Everything else, every printable character and the backslash included, is kept as it is.
UNSAFE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
_SHORT: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _render(match: re.Match[str]) -> str:
    char = match.group()
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def for_terminal(text: str) -> str:
    """`text` for one field of a terminal line: each unsafe character as a Python-style escape
    (`\\t`, `\\n`, `\\r`, `\\x1b`, `\\x9b`, `\\u202e`, `\\udcff`); text without one is returned unchanged."""
    if UNSAFE.search(text) is None:
        return text
    return UNSAFE.sub(_render, text)


def for_log(text: str) -> str:
    """`text` for one log line: the same characters and renderings as `for_terminal` (a log is read on a
    terminal too), so no record can hold a line break or an escape sequence that came from data."""
    return for_terminal(text)


def for_html(text: str) -> str:
    """`text` for an HTML text node or a quoted attribute: escaped as for a terminal, then `& < > " '`."""
    return html.escape(for_terminal(text), quote=True)


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def json_safe(document: str) -> str:
    """A JSON document (`json.dumps(..., ensure_ascii=False)`) with every unsafe character as `\\uXXXX`.

    json.dumps escapes C0 controls itself but leaves DEL, C1 controls, the separators, the bidi controls
    and lone surrogates raw. In a compact document they can only stand inside strings, where `\\uXXXX` is
    the same value: a JSON reader gets exactly what is stored, and the terminal gets no control character.
    """
    if UNSAFE.search(document) is None:
        return document
    return UNSAFE.sub(_json_escape, document)
