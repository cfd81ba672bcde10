"""`KeysSync` against a real PostgreSQL and a real client.keys: agents the node lacks are appended (and the
reload asked for), an id the file knows, even as a removed line, is left alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg

from agentpulse.cluster.keysync import KeysSync
from agentpulse.keysfile import read_keys_file


def test_missing_agents_are_appended_and_removed_ones_stay_removed(dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE agent (id INTEGER, name TEXT, register_ip TEXT, internal_key TEXT)")
        conn.execute(
            "INSERT INTO agent VALUES (0, 'manager', '127.0.0.1', NULL), (1, 'a', 'any', 'k1'), "
            "(2, 'b', 'any', 'k2'), (3, 'c', '10.0.0.3', 'k3'), (4, 'd', NULL, 'k4')"
        )
    keys = tmp_path / "client.keys"
    keys.write_text("001 a any k1\n002 !b any k2\n")
    reloads: list[bool] = []
    present = {1}
    sync = KeysSync(dsn, "node-b", keys, present.__contains__, lambda: reloads.append(True))

    async def scenario() -> tuple[int, int]:
        first = await sync.once()
        present.update({3, 4})  # the reload took them
        second = await sync.once()
        await sync.stop()
        return first, second

    assert asyncio.run(scenario()) == (2, 0)
    assert keys.read_text() == "001 a any k1\n002 !b any k2\n003 c 10.0.0.3 k3\n004 d any k4\n"
    assert [entry.number for entry in read_keys_file(keys).active()] == [1, 3, 4]
    assert reloads == [True]


def test_an_agent_gone_from_the_database_is_removed_here_once_but_not_one_never_seen_there(
    dsn: str, tmp_path: Path
) -> None:
    """Agent 2 was in the database and is gone (removed on another node): removed here. Agent 5 is in this
    node's keys but was never seen in the database (enrolled here, its row not committed yet): kept."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE agent (id INTEGER, name TEXT, register_ip TEXT, internal_key TEXT)")
        conn.execute("INSERT INTO agent VALUES (1, 'a', 'any', 'k1'), (2, 'b', 'any', 'k2')")
    keys = tmp_path / "client.keys"
    keys.write_text("001 a any k1\n002 b any k2\n005 e any k5\n")
    present = {1, 2, 5}
    removed: list[list[int]] = []

    async def remove(ids: list[int]) -> None:
        removed.append(ids)
        present.difference_update(ids)

    sync = KeysSync(dsn, "node-b", keys, present.__contains__, lambda: None, removed=remove)

    async def scenario() -> None:
        await sync.once()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("DELETE FROM agent WHERE id = 2")
        await sync.once()
        await sync.once()
        await sync.stop()

    asyncio.run(scenario())
    assert removed == [[2]]
    assert sync.removals == 1


def test_the_full_read_runs_only_when_the_keys_in_the_database_changed(dsn: str, tmp_path: Path) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE agent (id INTEGER, name TEXT, register_ip TEXT, internal_key TEXT)")
        conn.execute("INSERT INTO agent VALUES (1, 'a', 'any', 'k1')")
    keys = tmp_path / "client.keys"
    keys.write_text("001 a any k1\n")
    present = {1}
    sync = KeysSync(dsn, "node-b", keys, present.__contains__, lambda: None)

    async def scenario() -> list[tuple[int, int]]:
        seen = []
        for change in (None, None, "INSERT INTO agent VALUES (2, 'b', 'any', 'k2')", None,
                       "UPDATE agent SET internal_key = 'k2b' WHERE id = 2"):  # fmt: skip
            if change is not None:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(change)
            seen.append((await sync.once(), sync.full_reads))
        await sync.stop()
        return seen

    # A sync reads every key only at first and after a change (a new agent, another key): 1, 1, 2, 2, 3.
    assert asyncio.run(scenario()) == [(0, 1), (0, 1), (1, 2), (0, 2), (0, 3)]
    assert keys.read_text() == "001 a any k1\n002 b any k2\n"
