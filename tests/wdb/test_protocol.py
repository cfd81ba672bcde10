"""The protocol helpers on their own: request splitting, answer bytes, paging."""

from __future__ import annotations

import json

from agentpulse.wdb.protocol import page, split_request


def test_split_request_rules() -> None:
    assert split_request(b"global x\n\0") == ("global x", True)
    assert split_request(b"global x\0junk") == ("global x", False)
    assert split_request(b"global x") == ("global x", False)


def test_page_stops_before_the_cap() -> None:
    status, text, taken = page(({"id": n} for n in range(100)), limit=50)
    assert status == "due" and len(text) <= 50 and taken == json.loads(text)
    assert page(iter([]))[:2] == ("ok", "[]")
