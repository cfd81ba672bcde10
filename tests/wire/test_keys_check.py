"""client.keys read strictly, as a reload is judged: every line valid, or each invalid one named with its
number and why; a valid file gives exactly the entries the lenient reader gives."""

from __future__ import annotations

import pytest

from agentpulse.wire import keys

K1, K2, K3 = "a" * 64, "0123456789abcdef" * 4, "F" * 64
GOOD = f"# fleet\n001 web-01 any {K1}\n002 !old-02 10.0.0.5 {K2}\n003 db-03 10.0.0.0/24 {K3}\n"


def _problems(text: str | bytes) -> list[tuple[int, str]]:
    data = text.encode() if isinstance(text, str) else text
    return [(p.line_no, p.reason) for p in keys.check_keys(data).problems]


def test_a_valid_file_has_no_problems_and_the_lenient_readers_entries() -> None:
    checked = keys.check_keys(GOOD.encode())
    assert checked.valid
    assert checked.keys.entries == keys.KeysFile.parse(GOOD).entries
    assert checked.usable() is checked.keys


def test_crlf_line_ends_are_read_as_the_lenient_reader_reads_them() -> None:
    text = GOOD.replace("\n", "\r\n")
    checked = keys.check_keys(text.encode())
    assert checked.valid
    assert checked.keys.entries == keys.KeysFile.parse(text).entries


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (f"004 web-04 any {K1[:10]}", "key of 10 characters, expected 64 hex characters"),
        (f"004 web-04 any {K1}0", "key of 65 characters, expected 64 hex characters"),
        (f"004 web-04 any {'g' * 64}", "key of 64 characters, expected 64 hex characters"),
        (f"004 web-04 any {K1[:30]}\x00{K1[31:]}", "NUL byte"),
        (f"004 web-04 any {K1[:30]}\x1b{K1[31:]}", "control character '\\x1b'"),
        (f"004 web-04 any {K1[:30]}\u2028{K1[31:]}", "control character '\\u2028'"),
        (f"004 web-04 10.0.0.300 {K1}", "invalid ip"),
        (f"000 web-04 any {K1}", "agent id 000 is the manager's"),
        (f"99999999999 web-04 any {K1}", "agent id 99999999999"),
        (f"004 web/04 any {K1}", "invalid agent name"),
        (f"001 web-04 any {K1}", "agent id 001 already on line 2"),
        (f"1 web-04 any {K1}", "agent id 1 already on line 2"),
        (f"004 web-01 any {K1}", "agent name 'web-01' already on line 2"),
        ("004 web-04 any", "expected '<id> <name> <ip> <key>'"),
        ("# " + "x" * 3000, "line of 3002 characters, longer than 2047"),
        (f"004 web-04 any {K1}" + " " * 3000, "line of 3079 characters, longer than 2047"),
    ],
)
def test_an_invalid_line_is_named_with_its_number_and_why(line: str, reason: str) -> None:
    problems = _problems(GOOD + line + "\n")
    assert len(problems) == 1, problems
    assert problems[0][0] == 5
    assert problems[0][1].startswith(reason), problems


def test_bytes_that_are_not_utf8_are_an_invalid_line() -> None:
    assert _problems(GOOD.encode() + b"004 caf\xe9 any " + K1.encode() + b"\n") == [
        (5, "bytes that are not UTF-8")
    ]


def test_a_removed_entry_may_share_an_id_or_name_with_an_active_one() -> None:
    assert _problems(GOOD + f"001 !web-01 any {K2}\n") == []


def test_a_truncated_last_line_is_invalid() -> None:
    data = (GOOD + f"004 web-04 any {K1}\n").encode()
    assert _problems(data[:-20]) == [(5, "key of 45 characters, expected 64 hex characters")]


def test_binary_junk_has_many_problems_and_usable_keeps_only_valid_lines() -> None:
    junk = bytes(range(256)) * 8
    checked = keys.check_keys(GOOD.encode() + junk)
    assert not checked.valid
    assert all(problem.line_no > 4 for problem in checked.problems)
    assert [entry.id for entry in checked.usable().active()] == ["001", "003"]


def test_reasons_are_ascii_and_short() -> None:
    (problem,) = keys.check_keys(f"004 n\u00e9-{'x' * 120} any {K1}\n".encode()).problems
    assert problem.reason.isascii() and len(problem.reason) <= keys.REASON_MAX


def test_a_file_over_the_size_limit_is_refused_whole() -> None:
    checked = keys.check_keys(b"#" * (keys.FILE_MAX + 1))
    assert [(p.line_no, p.reason) for p in checked.problems] == [
        (0, f"file larger than {keys.FILE_MAX} bytes")
    ]
    assert list(checked.usable().active()) == []
