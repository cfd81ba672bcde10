"""AgentQuery over a real global.db: filters bound as parameters, pages from either end, LIKE escaped."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from agentpulse.store.agentquery import AgentField, AgentQuery, AllOf, AnyOf, Condition, Op, SortKey
from agentpulse.store.sqlite import schema
from agentpulse.store.sqlite.reads import SqliteReader

AGENTS = 300


@pytest.fixture
def reader(tmp_path: Path) -> SqliteReader:
    db_path = tmp_path / "global.db"
    schema.create_global_db(db_path, "manager", 1_700_000_000)
    db = sqlite3.connect(db_path)
    with db:
        db.executemany(
            "INSERT INTO agent (id, name, register_ip, date_add, last_keepalive, connection_status, `group`, internal_key)"
            " VALUES (?, ?, 'any', 1, ?, ?, ?, 'secret')",
            [
                (
                    n,
                    f"agent_{n:03d}%",
                    1_700_000_000 + (n * 7919) % AGENTS,
                    ("active", "disconnected")[n % 2],
                    "default,web" if n % 3 == 0 else "default",
                )
                for n in range(1, AGENTS + 1)
            ],
        )
    db.close()
    return SqliteReader(db_path)


def test_every_page_sorted_by_keepalive_matches_a_full_sort_from_both_ends(reader: SqliteReader) -> None:
    key = (SortKey(AgentField.LAST_KEEPALIVE, descending=True),)
    everything = reader.agents_page(
        AgentQuery(sort=key, limit=None, where=Condition(AgentField.ID, Op.NE, 0))
    )
    expected = [row["id"] for row in everything.rows]
    assert len(expected) == AGENTS
    for offset in (0, 10, 149, 150, 151, 280, 295, 299):
        page = reader.agents_page(
            AgentQuery(sort=key, offset=offset, limit=7, where=Condition(AgentField.ID, Op.NE, 0))
        )
        assert [row["id"] for row in page.rows] == expected[offset : offset + 7], offset
        assert page.total == AGENTS


def test_filters_groups_and_hidden_columns(reader: SqliteReader) -> None:
    active = reader.agents_page(AgentQuery(where=Condition(AgentField.STATUS, Op.EQ, "active"), limit=None))
    assert active.total == AGENTS // 2 + 1 and all(
        row["connection_status"] == "active" for row in active.rows
    )
    assert all("internal_key" not in row for row in active.rows)
    web = reader.agents_page(AgentQuery(where=Condition(AgentField.GROUP, Op.IN_GROUP, "web"), limit=None))
    assert web.total == AGENTS // 3
    either = AnyOf((Condition(AgentField.ID, Op.EQ, 4), Condition(AgentField.ID, Op.EQ, 9)))
    both = AllOf((either, Condition(AgentField.STATUS, Op.EQ, "disconnected")))
    assert [row["id"] for row in reader.agents_page(AgentQuery(where=both)).rows] == [9]
    listed = reader.agents_page(AgentQuery(ids=(5, 3, 999)))
    assert [row["id"] for row in listed.rows] == [3, 5]


def test_like_wildcards_in_a_value_are_literal_and_quotes_are_data(reader: SqliteReader) -> None:
    percent = reader.agents_page(AgentQuery(where=Condition(AgentField.NAME, Op.CONTAINS, "1%")))
    # '%' matched literally: the 30 names ending in '1%', not every name holding a '1'
    assert percent.total == 30 and all(str(row["name"]).endswith("1%") for row in percent.rows)
    underscore = reader.agents_page(AgentQuery(where=Condition(AgentField.NAME, Op.CONTAINS, "t_0")))
    assert underscore.total == 99  # agent_0xx%: '_' matched literally
    hostile = reader.agents_page(AgentQuery(where=Condition(AgentField.NAME, Op.EQ, "x' OR '1'='1")))
    assert hostile.total == 0


def test_json_items_built_by_sqlite_equal_the_python_items(reader: SqliteReader) -> None:
    import json

    from agentpulse.api.fields import item, outputs

    db = sqlite3.connect(reader.global_db)
    with db:
        db.execute(
            "UPDATE agent SET os_name='Ubuntu', os_platform='ubuntu', version='Wazuh v4.14.7', ip='10.0.0.5', "
            "disconnection_time=1700000100, `group`='default,we\\\"b' WHERE id = 7"
        )
        db.execute("UPDATE agent SET `group`=NULL WHERE id = 8")
    db.close()
    query = AgentQuery(limit=20)
    rows = reader.agents_page(query).rows
    for select in (None, frozenset({"name", "os"}), frozenset({"os.platform", "lastKeepAlive", "group"})):
        encoded = reader.agents_json(query, outputs(select))
        assert [json.loads(text) for text in encoded.items] == [item(row, select) for row in rows], select
    manager = json.loads(reader.agents_json(AgentQuery(limit=1), outputs(None)).items[0])
    assert manager["id"] == "000" and "group" not in manager
    seventh = json.loads(reader.agents_json(AgentQuery(ids=(7,)), outputs(None)).items[0])
    assert seventh["os"] == {"name": "Ubuntu", "platform": "ubuntu"} and seventh["ip"] == "10.0.0.5"
    assert (
        seventh["group"] == ["default", 'we\\"b']
        and seventh["disconnection_time"] == "2023-11-14T22:15:00+00:00"
    )
