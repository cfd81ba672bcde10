"""The output-boundary escapes: no control character survives, printable text is left alone, JSON keeps
its value."""

from __future__ import annotations

import json
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentpulse.escape import UNSAFE, for_html, for_log, for_terminal, json_safe

HOSTILE = "\x1b[2J\r\x00\n" + "agentpulse-remoted: ERROR: FORGED LOG LINE\x7f\x9b31m\u202e\u2028\ud800"

# Every code point, lone surrogates included: what a JSON `\ud800` escape or surrogateescape can produce.
any_text = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF))
# Text without one character we escape: letters, marks, numbers, punctuation, symbols and spaces.
printable = st.text(
    alphabet=st.characters(categories=("L", "M", "N", "P", "S", "Zs")).filter(
        lambda char: UNSAFE.fullmatch(char) is None
    )
)


def is_control(char: str) -> bool:
    return unicodedata.category(char) in ("Cc", "Cs") or UNSAFE.fullmatch(char) is not None


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b[2J", "\\x1b[2J"),
        ("a\r\nb\tc", "a\\r\\nb\\tc"),
        ("\x00", "\\x00"),
        ("\x7f\x85\x9b", "\\x7f\\x85\\x9b"),
        ("\u202eevil\u2066", "\\u202eevil\\u2066"),
        ("\u2028", "\\u2028"),
        ("name\udcff", "name\\udcff"),
        ("Wazuh v4.14.7 ü 東京 \\x1b", "Wazuh v4.14.7 ü 東京 \\x1b"),
    ],
)
def test_each_unsafe_character_is_shown_as_its_escape(text: str, shown: str) -> None:
    assert for_terminal(text) == shown
    assert for_log(text) == shown


def test_a_forged_log_line_stays_on_its_line() -> None:
    line = for_log(HOSTILE)
    assert line.splitlines() == [line]
    assert "\\nagentpulse-remoted: ERROR: FORGED LOG LINE" in line
    line.encode("utf-8")  # no lone surrogate left


@given(any_text)
def test_terminal_and_log_text_never_hold_a_control_character(text: str) -> None:
    for shown in (for_terminal(text), for_log(text), for_html(text), json_safe(text)):
        assert not any(is_control(char) for char in shown)
        assert shown.splitlines() == ([shown] if shown else [])
        shown.encode("utf-8")


@given(printable)
def test_printable_text_is_unchanged(text: str) -> None:
    assert for_terminal(text) == text
    assert for_log(text) == text
    assert json_safe(text) == text


@given(any_text)
def test_json_safe_keeps_the_value_of_a_compact_document(text: str) -> None:
    document = json.dumps({"os": text, "labels": [text]}, ensure_ascii=False, separators=(",", ":"))
    assert json.loads(json_safe(document)) == {"os": text, "labels": [text]}


def test_html_text_is_escaped_for_markup_too() -> None:
    assert for_html('<b onclick="x">&\x1b') == "&lt;b onclick=&quot;x&quot;&gt;&amp;\\x1b"
