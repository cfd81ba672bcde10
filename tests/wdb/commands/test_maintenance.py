"""Upkeep commands: vacuum and fragmentation of global.db and of a per-agent database."""

from __future__ import annotations

import json
import re

from tests.wdb.served import Served


def test_vacuum_and_fragmentation_answers(served: Served) -> None:
    assert re.fullmatch(r'ok \{"fragmentation_after_vacuum":\d+\}', served.query("global vacuum"))
    fragmentation = json.loads(served.query("global get_fragmentation").removeprefix("ok "))
    assert set(fragmentation) == {"fragmentation", "free_pages_percentage"}
    metadata = dict(tuple(row) for row in served.rows("SELECT key, value FROM metadata"))
    assert metadata["last_vacuum_value"].isdigit() and int(metadata["last_vacuum_time"]) > 0


def test_agent_database_vacuum_and_fragmentation(served: Served) -> None:
    assert served.query("agent 1 vacuum") == "err Couldn't open DB for agent 1"
    served.query('global update-keepalive {"id":1,"connection_status":"pending","sync_status":"synced"}')
    assert re.fullmatch(r'ok \{"fragmentation_after_vacuum":\d+\}', served.query("agent 1 vacuum"))
    assert (
        json.loads(served.query("agent 1 get_fragmentation").removeprefix("ok "))["free_pages_percentage"]
        == 0
    )
