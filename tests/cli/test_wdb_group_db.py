"""`agentpulse wdb`, `agentpulse group` and `agentpulse db` against a store serving its query socket."""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentpulse.cli.group import GroupCommandError, group_requests, parse_agents
from agentpulse.cli.main import main
from agentpulse.paths import Home
from agentpulse.store.sqlite import schema
from tests.wdb.served import Served


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    served = Served(tmp_path / "ossec", agents=30)
    try:
        yield served
    finally:
        served.close()


def run(capsys: pytest.CaptureFixture[str], home: Path, *args: str) -> tuple[int, str, str]:
    code = (
        main([*args[:1], "--home", str(home), *args[1:]])
        if args[0] != "wdb"
        else main([*args, "--home", str(home)])
    )
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- agentpulse wdb ------------------------------------------------------------------------------------


def test_wdb_prints_the_answer(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, served.home.root, "wdb", "global select-agent-name 3") == (
        0,
        'ok [{"name":"agent-00003"}]\n',
        "",
    )


def test_wdb_pretty_indents_the_payload(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, served.home.root, "wdb", "global select-agent-name 3", "--pretty")
    assert code == 0
    assert out == 'ok\n[\n  {\n    "name": "agent-00003"\n  }\n]\n'


def test_wdb_error_answer_exits_1(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, served.home.root, "wdb", "global nope") == (
        1,
        "err Invalid DB query syntax, near 'nope'\n",
        "",
    )


def test_wdb_without_a_manager_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Home(tmp_path).create_layout()
    code, out, err = run(capsys, tmp_path, "wdb", "global select-groups")
    assert (code, out) == (2, "")
    assert "no manager answers on" in err and "agentpulse start" in err


# -- agentpulse group ----------------------------------------------------------------------------------


def test_group_lifecycle(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    home = served.home.root
    assert run(capsys, home, "group", "create", "web") == (0, "Group 'web' created.\n", "")
    assert run(capsys, home, "group", "assign", "web", "1-3", "7") == (
        0,
        "4 agents added to group 'web'.\n",
        "",
    )
    assert run(capsys, home, "group", "list") == (0, "default: 30 agents\nweb: 4 agents\n", "")
    assert run(capsys, home, "group", "list", "web") == (0, "001\n002\n003\n007\n", "")
    assert served.query("global select-group-belong 7") == 'ok ["default","web"]'
    assert run(capsys, home, "group", "unassign", "web", "2") == (
        0,
        "1 agents removed from group 'web'.\n",
        "",
    )
    assert run(capsys, home, "group", "reconnect", "web") == (
        0,
        "Group 'web': 3 agents, 1 connected ones told to reconnect.\n",
        "",
    )
    assert run(capsys, home, "group", "delete", "web") == (0, "Group 'web' deleted.\n", "")
    assert served.query("global select-group-belong 7") == 'ok ["default"]'


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create", "default"), "group 'default' already exists"),
        (("delete", "default"), "the default group cannot be deleted"),
        (("delete", "ghost"), "group 'ghost' does not exist"),
        (
            ("assign", "ghost", "1"),
            "group 'ghost' does not exist: create it with `agentpulse group create ghost`",
        ),
        (("assign", "default", "999"), "An error occurred during the set of the groups"),
        (("assign", "default", "5-2"), "the range ends before it starts"),
        (("create", "../x"), "invalid group name '../x'"),
        (("reconnect", "ghost"), "Group 'ghost' not found"),
    ],
)
def test_group_errors_are_clear(
    served: Served, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], message: str
) -> None:
    code, out, err = run(capsys, served.home.root, "group", *args)
    assert (code, out) == (1, "")
    assert message in err


def test_group_without_a_manager_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Home(tmp_path).create_layout()
    code, _, err = run(capsys, tmp_path, "group", "list")
    assert code == 2
    assert "no manager is running on" in err and "agentpulse start" in err


def test_assigning_many_agents_is_split_under_the_frame_size() -> None:
    requests = list(group_requests(list(range(1, 20_001)), "web", "append"))
    assert len(requests) > 1
    assert all(len(request) < 65536 for request in requests)
    ids = [item["id"] for r in requests for item in json.loads(r.split(" ", 2)[2])["data"]]
    assert ids == list(range(1, 20_001))


def test_parse_agents() -> None:
    assert parse_agents(["3", "1-2", "3"]) == [3, 1, 2]
    with pytest.raises(GroupCommandError):
        parse_agents(["x"])


# -- agentpulse db -------------------------------------------------------------------------------------


def test_db_vacuum_through_the_manager(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, served.home.root, "db", "vacuum")
    assert (code, err) == (0, "")
    assert re.fullmatch(
        r"global\.db: vacuumed \(by the manager\): \d+ -> \d+ bytes, fragmentation after vacuum \d+%\n", out
    )


def test_db_vacuum_of_an_agent_through_the_manager(
    served: Served, capsys: pytest.CaptureFixture[str]
) -> None:
    served.query('global update-keepalive {"id":4,"connection_status":"pending","sync_status":"synced"}')
    code, out, _ = run(capsys, served.home.root, "db", "vacuum", "--agent", "4")
    assert code == 0 and out.startswith("004.db: vacuumed (by the manager)")
    code, _, err = run(capsys, served.home.root, "db", "vacuum", "--agent", "5")
    assert code == 1 and "Couldn't open DB for agent 5" in err


def test_db_vacuum_without_a_manager_vacuums_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = Home(tmp_path)
    home.create_layout()
    schema.create_global_db(home.global_db, "mgr", 1)
    code, out, _ = run(capsys, tmp_path, "db", "vacuum")
    assert code == 0 and out.startswith("global.db: vacuumed (no manager running)")
    assert not home.pid_file.exists()  # the lock was taken and given back


def test_db_vacuum_refuses_while_the_home_is_locked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from agentpulse.manager import HomeLock

    home = Home(tmp_path)
    home.create_layout()
    schema.create_global_db(home.global_db, "mgr", 1)
    lock = HomeLock(home.pid_file)
    lock.acquire()
    try:
        code, _, err = run(capsys, tmp_path, "db", "vacuum")
    finally:
        lock.release()
    assert code == 2 and "another agentpulse manager" in err


def test_db_check_sound_and_damaged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = Home(tmp_path)
    home.create_layout()
    schema.create_global_db(home.global_db, "mgr", 1)
    assert run(capsys, tmp_path, "db", "check") == (0, "global.db: ok\n", "")
    with contextlib.closing(sqlite3.connect(home.global_db)) as db:
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("CREATE TABLE filler (x TEXT)")
        db.executemany("INSERT INTO filler VALUES (?)", [("x" * 3000,) for _ in range(50)])
        db.commit()
    data = bytearray(home.global_db.read_bytes())
    data[4096 * 5 : 4096 * 5 + 100] = b"\xff" * 100
    home.global_db.write_bytes(bytes(data))
    code, _, err = run(capsys, tmp_path, "db", "check")
    assert code == 1 and "global.db:" in err


def test_db_check_of_a_missing_agent_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Home(tmp_path).create_layout()
    code, _, err = run(capsys, tmp_path, "db", "check", "--agent", "7")
    assert code == 1 and "no database at" in err and "007.db" in err
