"""AgentQuery on both backends (the `database` fixture): filters bound as parameters, pages from either end,
LIKE escaped, JSON items equal to the Python ones, and the other reads of the HTTP API. The last test fills
a SQLite and a PostgreSQL database alike and asks both the same queries: SQLite's answers are the contract."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentpulse.api.fields import item, outputs
from agentpulse.store.agentquery import AgentField, AgentQuery, AllOf, AnyOf, Condition, Op, SortKey
from agentpulse.store.facade import Store
from agentpulse.store.reader import Reader
from tests.pgserver import PostgresServer
from tests.store.databases import Database, PostgresDatabase, SqliteDatabase, postgres_sql

AGENTS = 300
INSERT = (
    "INSERT INTO agent (id, name, register_ip, date_add, last_keepalive, connection_status, `group`,"
    " internal_key) VALUES (?, ?, 'any', 1, ?, ?, ?, 'secret')"
)


def fleet() -> list[tuple[object, ...]]:
    return [
        (
            n,
            f"agent_{n:03d}%",
            1_700_000_000 + (n * 7919) % AGENTS,
            ("active", "disconnected")[n % 2],
            "default,web" if n % 3 == 0 else "default",
        )
        for n in range(1, AGENTS + 1)
    ]


def write(database: Database, statements: list[tuple[str, list[tuple[object, ...]]]]) -> None:
    """Run `statements` (SQLite's spelling, each with its rows of parameters) on the database."""
    if isinstance(database, SqliteDatabase):
        db = sqlite3.connect(database.db_dir / "global.db")
        with db:
            for sql, rows in statements:
                db.executemany(sql, rows)
        db.close()
        return
    assert isinstance(database, PostgresDatabase)
    import psycopg

    with psycopg.connect(database.dsn) as pg, pg.cursor() as cur:
        for sql, rows in statements:
            cur.executemany(postgres_sql(sql), rows)  # type: ignore[arg-type]


def opened(database: Database, db_dir: Path) -> Reader:
    """The database with its schema and the manager's row (a store opened once), read by a Reader."""
    store = Store(db_dir, manager_host="manager", node_name="node01", backend=database.backend(db_dir))
    store.open([])
    reader = store.reader()
    store.close()
    return reader


@pytest.fixture
def reader(database: Database, tmp_path: Path) -> Iterator[Reader]:
    reader = opened(database, tmp_path / "db")
    write(database, [(INSERT, fleet())])
    yield reader
    reader.close()


def test_every_page_sorted_by_keepalive_matches_a_full_sort_from_both_ends(reader: Reader) -> None:
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


def test_filters_groups_and_hidden_columns(reader: Reader) -> None:
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


def test_like_wildcards_in_a_value_are_literal_and_quotes_are_data(reader: Reader) -> None:
    percent = reader.agents_page(AgentQuery(where=Condition(AgentField.NAME, Op.CONTAINS, "1%")))
    # '%' matched literally: the 30 names ending in '1%', not every name holding a '1'
    assert percent.total == 30 and all(str(row["name"]).endswith("1%") for row in percent.rows)
    underscore = reader.agents_page(AgentQuery(where=Condition(AgentField.NAME, Op.CONTAINS, "t_0")))
    assert underscore.total == 99  # agent_0xx%: '_' matched literally
    hostile = reader.agents_page(AgentQuery(where=Condition(AgentField.NAME, Op.EQ, "x' OR '1'='1")))
    assert hostile.total == 0


def test_json_items_built_by_the_backend_equal_the_python_items(reader: Reader, database: Database) -> None:
    write(
        database,
        [
            (
                "UPDATE agent SET os_name='Ubuntu', os_platform='ubuntu', version='Wazuh v4.14.7', ip='10.0.0.5', "
                "disconnection_time=1700000100, `group`='default,we\\\"b' WHERE id = 7",
                [()],
            ),
            ("UPDATE agent SET `group`=NULL WHERE id = 8", [()]),
        ],
    )
    query = AgentQuery(limit=20)
    rows = reader.agents_page(query).rows
    for select in (None, frozenset({"name", "os"}), frozenset({"os.platform", "lastKeepAlive", "group"})):
        encoded = reader.agents_json(query, outputs(select))
        decoded = [json.loads(text) for text in encoded.items]
        assert decoded == [item(row, select) for row in rows], select
    manager = json.loads(reader.agents_json(AgentQuery(limit=1), outputs(None)).items[0])
    assert manager["id"] == "000" and "group" not in manager
    seventh = json.loads(reader.agents_json(AgentQuery(ids=(7,)), outputs(None)).items[0])
    assert seventh["os"] == {"name": "Ubuntu", "platform": "ubuntu"} and seventh["ip"] == "10.0.0.5"
    assert (
        seventh["group"] == ["default", 'we\\"b']
        and seventh["disconnection_time"] == "2023-11-14T22:15:00+00:00"
    )


HISTORY = (
    "INSERT INTO agent_status_history (agent_id, seq, from_status, to_status, status_code, at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)


def test_history_changes_by_minute_and_counts(reader: Reader, database: Database) -> None:
    write(
        database,
        [
            (
                HISTORY,
                [
                    (5, 1, "never_connected", "pending", 0, 119.9),  # minute 1, not 2 (truncated)
                    (5, 2, "pending", "active", 0, 120.5),
                    (5, 3, "active", "disconnected", 1, 179.0),
                    (6, 1, "never_connected", "pending", 0, 30.0),  # before `since`
                ],
            ),
            (  # SQLite's global.db starts with 'default', PostgreSQL's without
                "INSERT INTO `group` (name) SELECT ? WHERE NOT EXISTS (SELECT 1 FROM `group` WHERE name = ?)",
                [("default", "default"), ("web", "web"), ("empty", "empty")],
            ),
            (
                "INSERT INTO belongs (id_agent, id_group, priority) SELECT ?, id, 0 FROM `group` WHERE name = ?",
                [(1, "default"), (2, "default"), (3, "web")],
            ),
            ("UPDATE agent SET group_config_status = 'synced' WHERE id IN (?, ?)", [(1, 2)]),
        ],
    )
    assert [(c.seq, c.to_status, c.code, c.at) for c in reader.history(5, 2)] == [
        (3, "disconnected", 1, 179.0),
        (2, "active", 0, 120.5),
    ]
    assert reader.history(404, 10) == []
    assert sorted(reader.changes_by_minute(60.0)) == [
        (1, "never_connected", "pending", 0, 1),
        (2, "active", "disconnected", 1, 1),
        (2, "pending", "active", 0, 1),
    ]
    assert reader.config_counts() == {"synced": 2, "not synced": AGENTS - 2}
    assert list(reader.group_counts().items()) == [("default", 2), ("web", 1), ("empty", 0)]
    assert reader.existing_ids([0, 3, 299, 301, 5000]) == {0, 3, 299}


ODD_NAMES = ("Zed", "alpha", "Beta", "_under", "ümlaut", "beta", "10", "9")


def odd_fleet() -> list[tuple[str, list[tuple[object, ...]]]]:
    """Agents whose text columns differ in case, accents, digits and NULLs: where sort orders of the two
    engines would part unless PostgreSQL sorts as SQLite does."""
    rows = []
    for n in range(1, 41):
        rows.append(
            (
                n,
                ODD_NAMES[n % len(ODD_NAMES)] + f"-{n % 5}",
                None if n % 4 == 0 else f"10.0.{n % 3}.{n % 7}",
                f"10.1.0.{n}",
                1_700_000_000 + n,
                None if n % 6 == 0 else 1_700_000_000 + (n * 37) % 11,
                ("active", "disconnected", "pending", "never_connected")[n % 4],
                None if n % 5 == 0 else ("Ubuntu", "ubuntu", "CentOS Linux", "Microsoft Windows")[n % 4],
                None if n % 7 == 0 else ("default", "default,web", "web,db", "")[n % 4],
                n % 3,
            )
        )
    sql = (
        "INSERT INTO agent (id, name, ip, register_ip, date_add, last_keepalive, connection_status, os_name,"
        " `group`, status_code) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    # The manager's row is stamped with the clock when each store opens: the two may be a second apart.
    return [(sql, rows), ("UPDATE agent SET date_add = 1700000000 WHERE id = 0", [()])]


def queries() -> list[AgentQuery]:
    by = SortKey
    f = AgentField
    found: list[AgentQuery] = []
    for keys in (
        (by(f.NAME),),
        (by(f.NAME, descending=True),),
        (by(f.IP),),
        (by(f.OS_NAME), by(f.ID, descending=True)),
        (by(f.LAST_KEEPALIVE, descending=True),),
        (by(f.GROUP), by(f.STATUS_CODE, descending=True)),
        (by(f.STATUS), by(f.LAST_KEEPALIVE)),
    ):
        for offset, limit in ((0, 7), (15, 10), (33, 7), (0, None), (50, 5)):
            found.append(AgentQuery(sort=keys, offset=offset, limit=limit))
    for where in (
        Condition(f.NAME, Op.CONTAINS, "BETA"),
        Condition(f.NAME, Op.NOT_CONTAINS, "a"),
        Condition(f.NAME, Op.LT, "a"),
        Condition(f.NAME, Op.GT, "Beta-2"),
        Condition(f.OS_NAME, Op.NE, "Ubuntu"),
        Condition(f.IP, Op.CONTAINS, "10.0.1"),
        Condition(f.IP, Op.EQ, "10.1.0.8"),
        Condition(f.LAST_KEEPALIVE, Op.GT, 1_700_000_004.5),
        Condition(f.LAST_KEEPALIVE, Op.LT, 1_700_000_004),
        Condition(f.ID, Op.EQ, "12"),
        Condition(f.ID, Op.LT, 10),
        Condition(f.STATUS_CODE, Op.CONTAINS, "2"),
        Condition(f.NAME, Op.EQ, 10),  # a number against text: compared as text
        Condition(f.GROUP, Op.IN_GROUP, "web"),
        Condition(f.GROUP, Op.CONTAINS, "_"),
        AnyOf(()),
        AllOf(()),
        AnyOf((Condition(f.STATUS, Op.EQ, "active"), AllOf((Condition(f.ID, Op.GT, 30),)))),
    ):
        found.append(AgentQuery(where=where, sort=(SortKey(f.NAME),), limit=None))
    found.append(AgentQuery(ids=(40, 3, 17, 999), sort=(SortKey(f.LAST_KEEPALIVE),)))
    return found


def test_postgresql_answers_every_query_as_sqlite_does(tmp_path: Path, postgres: PostgresServer) -> None:
    sqlite_db = SqliteDatabase(tmp_path / "sqlite")
    pg_db = PostgresDatabase(postgres)
    readers = [opened(sqlite_db, tmp_path / "sqlite"), opened(pg_db, tmp_path / "pg")]
    for database in (sqlite_db, pg_db):
        write(database, odd_fleet())
    try:
        every = outputs(None)
        for query in queries():
            want, got = (r.agents_page(query) for r in readers)
            assert (got.total, got.rows) == (want.total, want.rows), query
            want_json, got_json = (r.agents_json(query, every) for r in readers)
            decoded = [json.loads(t) for t in got_json.items]
            assert decoded == [json.loads(t) for t in want_json.items], query
            assert [list(d) for d in decoded] == [list(json.loads(t)) for t in want_json.items]  # key order
    finally:
        for reader in readers:
            reader.close()
