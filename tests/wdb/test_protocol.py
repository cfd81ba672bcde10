"""The protocol helpers on their own: request splitting, answer bytes, paging."""

from __future__ import annotations

import json

from agentpulse.wdb.protocol import OS_MAXSTR, answer_body, atoi, batched, page, rows_to_fill, split_request


def test_split_request_rules() -> None:
    assert split_request(b"global x\n\0") == ("global x", True)
    assert split_request(b"global x\0junk") == ("global x", False)
    assert split_request(b"global x") == ("global x", False)


def test_page_stops_before_the_cap() -> None:
    status, text, taken = page(({"id": n} for n in range(100)), limit=50)
    assert status == "due" and len(text) <= 50 and taken == json.loads(text)
    assert page(iter([]))[:2] == ("ok", "[]")


def test_answer_body_puts_the_newline_back_and_never_passes_a_frame() -> None:
    assert answer_body("ok []", True) == b"ok []\n"
    assert answer_body("ok []", False) == b"ok []"
    assert answer_body("ok " + "x" * OS_MAXSTR, False) == b"err Response too long"


def test_rows_to_fill_is_always_more_than_a_page_holds() -> None:
    for size in (1, 8, 13):
        item = 7 if size == 1 else "x" * (size - 2)  # `size` bytes of JSON
        rows = rows_to_fill(size)
        status, _, taken = page(item for _ in range(rows))
        assert status == "due" and len(taken) < rows


def test_batched_reads_batch_after_batch_only_as_consumed() -> None:
    asked: list[tuple[int, int]] = []

    def fetch(after: int, size: int) -> list[int]:
        asked.append((after, size))
        return [n for n in range(after + 1, 11)][:size]

    rows = batched(fetch, 0, lambda n: n, 4)
    assert [next(rows), next(rows)] == [1, 2]
    assert asked == [(0, 4)]
    assert list(rows) == list(range(3, 11))
    assert asked == [(0, 4), (4, 4), (8, 4)]


def test_atoi_is_cs_clamped_to_64_bits() -> None:
    assert atoi("  42abc") == 42
    assert atoi("-7") == -7
    assert atoi("x1") == 0
    assert atoi("9" * 30) == 2**63 - 1
