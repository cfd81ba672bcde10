"""`agentpulse db vacuum [--agent ID]` and `agentpulse db check [--agent ID]`: database upkeep by hand.

`vacuum` asks the running manager (`global vacuum` or `agent <id> vacuum` on its query socket), whose
writer thread owns global.db; with no manager running it takes the home's lock (so none starts meanwhile)
and vacuums the file itself. `check` runs SQLite's integrity_check on a read-only connection, manager
running or not. Exit codes: 0 done and sound, 1 a failure or a damaged file, 2 the home is busy.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from pathlib import Path

from agentpulse.cli.home import add_home_option, resolve_home
from agentpulse.paths import Home

PROG = "agentpulse db"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("db", help="vacuum and check global.db and the per-agent databases")
    add_home_option(parser)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (
        ("vacuum", "rebuild a database to give its free pages back to the disk"),
        ("check", "run SQLite's integrity_check (read-only)"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("--agent", type=int, metavar="ID", help="the per-agent database <ID>.db")
    parser.set_defaults(handler=run)


def _path(home: Home, agent: int | None) -> Path:
    return home.global_db if agent is None else home.agent_db(agent)


def vacuum(home: Home, agent: int | None) -> tuple[int, str]:
    from agentpulse.store.sqlite import maintenance
    from agentpulse.wdb.client import WdbClient, WdbUnavailable

    path = _path(home, agent)
    query = "global vacuum" if agent is None else f"agent {agent} vacuum"
    before = maintenance.database_size(path)
    try:
        with WdbClient(home.wdb_socket, timeout=600) as client:
            answer = client.query(query)
    except WdbUnavailable:
        return _vacuum_offline(home, path, before)
    status, _, payload = answer.partition(" ")
    if status != "ok":
        return 1, f"{PROG}: {payload or answer}\n"
    after = json.loads(payload).get("fragmentation_after_vacuum")
    return 0, _report(path, before, maintenance.database_size(path), after, "by the manager")


def _vacuum_offline(home: Home, path: Path, before: int) -> tuple[int, str]:
    from agentpulse.manager import AlreadyRunning, HomeLock
    from agentpulse.store.sqlite import maintenance

    if not path.exists():
        return 1, f"{PROG}: no database at {path}\n"
    lock = HomeLock(home.pid_file)
    try:
        lock.acquire()
    except AlreadyRunning as error:
        return 2, f"{PROG}: {error}; its query socket does not answer, try again once it is up\n"
    try:
        after = maintenance.vacuum_file(path)
    except sqlite3.Error as error:
        return 1, f"{PROG}: cannot vacuum {path}: {error}\n"
    finally:
        lock.release()
    return 0, _report(path, before, maintenance.database_size(path), after, "no manager running")


def _report(path: Path, before: int, after: int, fragmentation: object, how: str) -> str:
    return (
        f"{path.name}: vacuumed ({how}): {before} -> {after} bytes, "
        f"fragmentation after vacuum {fragmentation}%\n"
    )


def check(home: Home, agent: int | None) -> tuple[int, str]:
    from agentpulse.store.sqlite import maintenance

    path = _path(home, agent)
    if not path.exists():
        return 1, f"{PROG}: no database at {path}\n"
    try:
        problems = maintenance.integrity_check(path)
    except sqlite3.Error as error:
        return 1, f"{path.name}: cannot be checked: {error}\n"
    if problems == ["ok"]:
        return 0, f"{path.name}: ok\n"
    return 1, f"{path.name}: damaged\n" + "".join(f"  {line}\n" for line in problems)


def run(args: argparse.Namespace) -> int:
    from agentpulse.cli import db_postgresql
    from agentpulse.cli.database import database_config

    home = resolve_home(args)
    config = database_config(home)
    if config.backend == "postgresql":
        if args.action == "vacuum":
            code, text = db_postgresql.vacuum(home, config, args.agent)
        else:
            code, text = db_postgresql.check(config)
    else:
        code, text = (vacuum if args.action == "vacuum" else check)(home, args.agent)
    (sys.stdout if code == 0 else sys.stderr).write(text)
    return code
