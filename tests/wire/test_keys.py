"""client.keys: parsing, editing that keeps untouched lines, ranges and the per-agent cipher keys."""

from __future__ import annotations

import base64
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentpulse.wire import keys

SAMPLE = (
    "# managed by hand\n"
    "001 agent-01 any aaaa\n"
    "002 !old-02 10.0.0.5 bbbb\n"
    "003 web-03 10.0.0.0/24 key with spaces\n"
    " 004 skipped-04 any cccc\n"
    "005 db-05 10.0.1.7 dddd\n"
    "006 six 2001:db8::/64 eeee\n"
    "007 nine 192.168.1.0/255.255.255.0 ffff\n"
    "008 #gone any gggg\n"
)


def test_comment_and_space_lines_are_skipped_and_removed_entries_flagged() -> None:
    parsed = keys.KeysFile.parse(SAMPLE)
    assert [entry.id for entry in parsed.active()] == ["001", "003", "005", "006", "007"]
    assert {entry.id for entry in parsed.entries if entry.removed} == {"002", "008"}


def test_key_is_everything_after_the_third_space() -> None:
    assert keys.KeysFile.parse(SAMPLE).by_id(3).key == "key with spaces"  # type: ignore[union-attr]


def test_only_a_plain_ipv4_address_is_a_single_host() -> None:
    parsed = keys.KeysFile.parse(SAMPLE)
    single = {entry.id: entry.ip.single_host for entry in parsed.active()}
    assert single == {"001": False, "003": False, "005": True, "006": False, "007": False}


@pytest.mark.parametrize(
    ("ip", "source", "allowed"),
    [
        ("any", "203.0.113.9", True),
        ("10.0.0.0/24", "10.0.0.77", True),
        ("10.0.0.0/24", "10.0.1.77", False),
        ("192.168.1.0/255.255.255.0", "192.168.1.3", True),
        ("10.0.1.7", "10.0.1.7", True),
        ("10.0.1.7", "10.0.1.8", False),
        ("2001:db8::/64", "2001:db8::1", True),
        ("2001:db8::/64", "10.0.0.1", False),
        ("!10.0.0.0/8", "10.1.1.1", False),
        ("!10.0.0.0/8", "11.1.1.1", True),
        ("10.0.0.0/24", "::ffff:10.0.0.9", True),
    ],
)
def test_source_ip_range_check(ip: str, source: str, allowed: bool) -> None:
    assert keys.parse_ip(ip).allows(source) is allowed


def test_new_ids_follow_the_highest_including_removed() -> None:
    parsed = keys.KeysFile.parse("001 a1 any k\n009 !gone any k\n")
    assert parsed.add("new-agent").id == "010"


def test_add_and_remove_keep_untouched_lines_byte_for_byte() -> None:
    parsed = keys.KeysFile.parse(SAMPLE)
    added = parsed.add("fresh", "any")
    parsed.remove("005")
    lines = parsed.render().splitlines()
    original = SAMPLE.splitlines()
    assert lines[:5] == original[:5]
    assert lines[5] == "005 !db-05 10.0.1.7 dddd"
    assert lines[6:9] == original[6:9]
    assert lines[9] == f"009 fresh any {added.key}"
    assert keys.KeysFile.parse(parsed.render()).by_id("005") is None


def test_duplicate_name_and_bad_name_are_refused() -> None:
    parsed = keys.KeysFile.parse(SAMPLE)
    with pytest.raises(ValueError, match="already exists"):
        parsed.add("agent-01")
    with pytest.raises(ValueError, match="invalid agent name"):
        parsed.add("bad name")
    with pytest.raises(ValueError, match="invalid ip"):
        parsed.add("ok-name", "300.1.1.1")


def test_malformed_lines_are_reported_not_fatal() -> None:
    parsed = keys.KeysFile.parse("001 a1 any k\nxyz broken\n002 a2 not-an-ip k\n")
    assert [entry.id for entry in parsed.active()] == ["001"]
    assert [problem.line_no for problem in parsed.problems] == [2, 3]


def test_generated_keys_are_64_lowercase_hex() -> None:
    key = keys.generate_key()
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert key != keys.generate_key()


def test_extracted_key_is_base64_of_the_line() -> None:
    entry = keys.KeysFile.parse("001 agent-01 any abc\n").by_id(1)
    assert entry is not None
    assert base64.b64decode(entry.extract()) == b"001 agent-01 any abc"


@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(text: str) -> None:
    parsed = keys.KeysFile.parse(text)
    assert len(parsed.entries) + len(parsed.problems) <= len(text.splitlines())


@pytest.mark.parametrize(
    "ip",
    [
        "any",
        "ANY",
        "10.0.1.7",
        "10.0.1.7/32",
        "10.0.1.7/255.255.255.255",
        "10.0.0.0/24",
        "192.168.1.0/255.255.255.0",
        "!10.0.1.7",
        "!10.0.0.0/8",
        "2001:db8::1",
        "2001:db8::/64",
        "::ffff:1.2.3.4",
    ],
)
def test_the_single_host_shortcut_answers_as_the_parsed_range(ip: str) -> None:
    parsed = keys.parse_ip(ip)
    assert keys.single_host_address(ip) == (parsed.lookup_text if parsed.single_host else None)
