"""The HTTP API of a real manager on PostgreSQL with real agents (the Python agent and wire agents): GET /agents
with status, q, search, sort, select and paging, the status summary, an agent's history and /groups, each
checked against agent_control -j and the full listing; then, the manager stopped, the same requests parsed
by the API and asked of PostgreSQL and of a SQLite copy of its rows give the same items (SQLite's semantics
are the contract)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import psycopg

from agentpulse.api.fields import outputs
from agentpulse.api.http import Request
from agentpulse.api.query import agents_request
from agentpulse.keysfile import read_keys_file
from agentpulse.store.postgresql.reads import PostgresReader
from agentpulse.store.sqlite import schema
from agentpulse.store.sqlite.reads import SqliteReader
from tests.e2e.api_tools import ADMIN, READER, Api, add_user, agent_control_statuses
from tests.e2e.harness import AgentFactory, ManagerProcess, ManagerSettings, run_cli
from tests.e2e.test_api import FLEET, HTTP, WIRE, WORDS, WireFleet
from tests.pgserver import PostgresServer

REQUESTS = (
    "limit=500",
    "status=active",
    "status=never_connected,pending&sort=-name",
    "q=" + quote("(status=active,status=pending);id>5"),
    "q=" + quote("name~00010"),
    "search=agent-00005",
    "search=-agent-0000&sort=name",
    "sort=-lastKeepAlive&limit=500",
    "sort=-lastKeepAlive&limit=4&offset=3",
    "sort=+status,-name&limit=5&offset=5",
    "select=name,os.platform,status&sort=-id",
    "group=web&select=group",
    "q=" + quote("id!=000") + "&sort=os.name,-dateAdd&select=os,dateAdd",
)


def ids(api: Api, query: str) -> list[str]:
    return [i["id"] for i in api.get(f"/agents?{query}")["data"]["affected_items"]]


def check_live_answers(api: Api, manager: ManagerProcess) -> None:
    full = api.get("/agents?limit=500")["data"]
    every = full["affected_items"]
    assert full["total_affected_items"] == FLEET + 1 and [i["id"] for i in every] == [
        f"{n:03d}" for n in range(FLEET + 1)
    ]
    control = agent_control_statuses(manager)
    assert {i["id"]: WORDS[i["status"]] for i in every[1:]} == {
        k: v for k, v in control.items() if k != "000"
    }
    by_status = {s: [i["id"] for i in every if i["status"] == s] for s in WORDS}
    assert ids(api, "status=active&limit=500") == by_status["active"] == [f"{n:03d}" for n in (0, 1, *WIRE)]
    assert ids(api, "status=never_connected") == [f"{n:03d}" for n in range(WIRE[-1] + 1, FLEET + 1)]
    assert ids(api, "q=" + quote("(status=active,status=pending);id>5")) == ["006", "007"]
    assert ids(api, "q=" + quote("name~00010")) == ["010"]
    assert ids(api, "search=-agent-0000&limit=500") == ["000", "010", "011", "012"]

    names = sorted(every, key=lambda i: i["name"].encode(), reverse=True)
    pages = [ids(api, f"sort=-name&limit=5&offset={offset}") for offset in range(0, FLEET + 1, 5)]
    assert [n for page in pages for n in page] == [
        i["id"] for i in names
    ]  # paged by 5 from either end: one sort
    newest = api.get("/agents?sort=-lastKeepAlive&limit=500")["data"]["affected_items"]
    stamps = [i.get("lastKeepAlive", "") for i in newest]
    assert sorted(i["id"] for i in newest) == [i["id"] for i in every]
    assert stamps[0] == "9999-12-31T23:59:59+00:00" and stamps == sorted(stamps, reverse=True)
    selected = api.get("/agents?select=name,os.platform,status&agents_list=001,008")["data"]["affected_items"]
    assert [set(i) for i in selected] == [{"id", "name", "status", "os"}, {"id", "name", "status"}]

    summary = api.get("/agents/summary/status")["data"]
    counts = {s: len(by_status[s]) - (s == "active") for s in WORDS}  # the manager left out
    assert summary["connection"] == {**counts, "total": FLEET}
    assert summary["configuration"]["total"] == FLEET
    history = api.get("/agents/001/history")["data"]["affected_items"]
    assert [(h["from"], h["to"]) for h in history][-2:] == [
        ("pending", "active"),
        ("never_connected", "pending"),
    ]
    assert len(history) == len(manager.history(1))
    groups = {g["name"]: g["count"] for g in api.get("/groups")["data"]["affected_items"]}
    assert groups == {"default": FLEET, "web": 4}
    assert ids(api, "group=web") == ["001", "002", "003", "004"]


def sqlite_copy(dsn: str, path: Path) -> SqliteReader:
    """The manager's agents, groups and memberships copied from PostgreSQL into a fresh global.db."""
    schema.create_global_db(path, "copy", 0)
    with psycopg.connect(dsn) as pg:
        tables: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
        for table in ("agent", '"group"', "belongs"):
            cursor = pg.execute(f"SELECT * FROM {table}")
            tables[table] = ([d.name for d in cursor.description or ()], cursor.fetchall())
    db = sqlite3.connect(path)
    with db:
        db.execute("DELETE FROM belongs")
        db.execute("DELETE FROM `group`")
        db.execute("DELETE FROM agent")
        for table, (columns, rows) in tables.items():
            names = ", ".join(f"`{c}`" for c in columns)
            marks = ", ".join("?" * len(columns))
            quoted = table.replace('"', "`")
            db.executemany(f"INSERT INTO {quoted} ({names}) VALUES ({marks})", rows)
    db.close()
    return SqliteReader(path)


def test_the_api_on_postgresql_answers_as_on_sqlite(
    manager: ManagerProcess, postgres: PostgresServer, agent_process: AgentFactory, tmp_path: Path
) -> None:
    dsn = postgres.create_database("e2e_api")
    manager.settings = ManagerSettings(api=HTTP)
    manager.use_postgresql(dsn)
    manager.add_agents(FLEET)
    manager.write_config()
    add_user(manager, *ADMIN, "admin")
    add_user(manager, *READER, "read")
    manager.start()
    api = Api(manager)
    api.token = api.login(ADMIN)
    keys = list(read_keys_file(manager.home.client_keys).active())
    python_agent = agent_process(keys[0])
    python_agent.start()
    with WireFleet(manager) as wire:
        for number in (1, *WIRE):
            manager.wait_for(number, "active", timeout=20)
        created = run_cli("agentpulse", "group", "create", "web", home=manager.root)
        assigned = run_cli("agentpulse", "group", "assign", "web", "1-4", home=manager.root)
        assert created.returncode == 0 and assigned.returncode == 0, (created.stderr, assigned.stderr)
        time.sleep(0.5)  # one flush: the view and PostgreSQL agree
        check_live_answers(api, manager)
    assert wire.stats.failures == []
    python_agent.terminate()
    assert manager.stop() == 0
    assert not manager.home.global_db.exists()  # everything was on PostgreSQL

    postgresql, sqlite = PostgresReader(dsn), sqlite_copy(dsn, tmp_path / "copy.db")
    try:
        for text in REQUESTS:
            request = Request("GET", "/agents", parse_qsl(text), {}, b"", "127.0.0.1")
            parsed = agents_request(request, time.time())
            want, got = (r.agents_json(parsed.query, outputs(parsed.select)) for r in (sqlite, postgresql))
            assert got.total == want.total and got.total > 0, text
            assert [json.loads(i) for i in got.items] == [json.loads(i) for i in want.items], text
        assert postgresql.history(1, 50) == table_history(dsn)
        assert postgresql.group_counts() == sqlite.group_counts() == {"default": FLEET, "web": 4}
        assert postgresql.config_counts() == sqlite.config_counts()
    finally:
        postgresql.close()
        sqlite.close()


def table_history(dsn: str) -> list[Any]:
    """Agent 001's history straight from the table, newest first (what `Reader.history` should give)."""
    from agentpulse.store.agentquery import StatusChange

    with psycopg.connect(dsn) as pg:
        rows = pg.execute(
            "SELECT seq, from_status, to_status, status_code, at FROM agent_status_history "
            "WHERE agent_id = 1 ORDER BY seq DESC"
        ).fetchall()
    return [StatusChange(*row) for row in rows]
