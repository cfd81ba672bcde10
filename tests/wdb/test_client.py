"""WdbClient against a served socket: `ok` payloads decoded, `err` raised, pages followed to the end."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentpulse.paths import Home
from agentpulse.wdb.client import WdbClient, WdbUnavailable
from agentpulse.wdb.protocol import WdbError
from tests.wdb.served import Served


def test_query_json_decodes_ok_and_raises_err(served: Served) -> None:
    with served.client() as client:
        assert client.query_json("global select-agent-name 2") == [{"name": "agent-00002"}]
        with pytest.raises(WdbError, match="Invalid DB query syntax, near 'nope'"):
            client.query_json("global nope")


def test_query_pages_follows_due_to_the_last_page(tmp_path: Path) -> None:
    served = Served(tmp_path / "ossec", agents=8000)
    try:
        with served.client() as client:
            rows = client.query_pages("global get-all-agents last_id {last}")
        assert [row["id"] for row in rows] == list(range(1, 8001))
    finally:
        served.close()


def test_no_manager_is_wdb_unavailable(tmp_path: Path) -> None:
    home = Home(tmp_path)
    home.create_layout()
    with pytest.raises(WdbUnavailable):
        WdbClient(home.wdb_socket)
