"""A broken client.keys never deletes the fleet: a reload is accepted whole or refused whole, by the manager,
for the workers too (issue 17, item 1). Five agents on a real manager (one process, and two workers),
connected over TCP with the wire-level agent; the file is broken on disk, then SIGHUP or the 1 s check."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from agentpulse.agent.connection import AgentCodec, AgentConnection
from agentpulse.wire import control
from agentpulse.wire.keys import AgentKey
from tests.e2e.harness import LOOPBACK, ManagerProcess, run_cli
from tests.e2e.test_statuses import KEEPALIVE

FLEET = 5
SETTLE = 2.5  # seconds for a reload (SIGHUP, or the harness's 1 s keyupdate_interval) and any purge to land


@dataclass(frozen=True)
class Breakage:
    name: str
    damage: Callable[[bytes], bytes]  # the good file's bytes -> what is on disk
    trigger: str  # "sighup" or "watch" (the keyupdate_interval check alone)
    invalid_line: str | None  # "line N" the refusal must name, None when the refusal is about removals


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")[:-1]


def _join(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def _with_line(number: int, edit: Callable[[bytes], bytes]) -> Callable[[bytes], bytes]:
    def damage(data: bytes) -> bytes:
        lines = _lines(data)
        lines[number - 1] = edit(lines[number - 1])
        return _join(lines)

    return damage


def _fields(line: bytes) -> list[bytes]:
    return line.split(b" ", 3)


BREAKAGES = [
    Breakage("truncated to nothing", lambda data: b"", "watch", None),
    Breakage("half-written", lambda data: data[: len(data) // 2], "sighup", "line 3"),
    Breakage("binary junk", lambda data: bytes(range(256)) * 16, "sighup", "line 1"),
    Breakage(
        "NUL bytes where lines 2 and 3 were",
        lambda data: _join(
            [
                _lines(data)[0],
                b"\x00" * (len(_lines(data)[1]) + 1 + len(_lines(data)[2])),
                *_lines(data)[3:],
            ]
        ),
        "watch",
        "line 2",
    ),
    Breakage("a 3,000-character line", _with_line(4, lambda line: line + b"a" * 3000), "sighup", "line 4"),
    Breakage(
        "a duplicate id",
        _with_line(5, lambda line: b"002 " + b" ".join(_fields(line)[1:])),
        "sighup",
        "line 5",
    ),
    Breakage(
        "a duplicate name",
        _with_line(5, lambda line: b" ".join([_fields(line)[0], b"agent-00001", *_fields(line)[2:]])),
        "sighup",
        "line 5",
    ),
    Breakage(
        "a bad IP field",
        _with_line(3, lambda line: b" ".join([*_fields(line)[:2], b"10.0.0.300", _fields(line)[3]])),
        "watch",
        "line 3",
    ),
    Breakage("a key of the wrong length", _with_line(2, lambda line: line[:-32]), "sighup", "line 2"),
]


# -- helpers -----------------------------------------------------------------------------------------------


async def _connect(manager: ManagerProcess, key: AgentKey) -> AgentConnection:
    connection = await AgentConnection.open(AgentCodec(key), LOOPBACK, manager.port)
    connection.send(control.build_startup("v4.14.7"))
    assert await connection.receive() == control.Ack(), f"agent {key.id} not accepted"
    connection.send(KEEPALIVE)
    assert await connection.receive() == control.Ack()
    return connection


async def _fleet(manager: ManagerProcess, keys: list[AgentKey]) -> list[AgentConnection]:
    connections = [await _connect(manager, key) for key in keys]
    await manager.reach_all("active", len(keys))
    return connections


async def _still_served(connections: list[AgentConnection]) -> None:
    for connection in connections:
        assert not connection.closed.is_set(), "a connection was dropped"
        connection.send(KEEPALIVE)
        assert await connection.receive() == control.Ack()


async def _refused_now(manager: ManagerProcess, key: AgentKey, attempts: int) -> None:
    """Every new connection of `key` is closed without an answer (with workers, SO_REUSEPORT spreads
    the attempts over them)."""
    for _ in range(attempts):
        connection = await AgentConnection.open(AgentCodec(key), LOOPBACK, manager.port)
        connection.send(control.build_startup("v4.14.7"))
        assert await connection.receive(timeout=5) is None, f"agent {key.id} still accepted"


def _refusals(manager: ManagerProcess) -> int:
    """The manager's count of refused reloads, from its state file (`keys_reloads_refused='N'`)."""
    path = manager.home.remoted_state
    text = path.read_text() if path.exists() else ""
    for line in text.splitlines():
        if line.startswith("keys_reloads_refused="):
            return int(line.split("=", 1)[1].strip("'"))
    return 0


async def _settle(manager: ManagerProcess, refusals: int) -> None:
    """Until the manager counted `refusals` refused reloads, at most SETTLE seconds; then a keyupdate
    interval more, so a reload nobody refused (the old workers' own watchers) would have landed too."""
    deadline = time.monotonic() + SETTLE
    while time.monotonic() < deadline and _refusals(manager) < refusals:
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.2)


def _write(manager: ManagerProcess, data: bytes, *, in_place: bool) -> None:
    path = manager.home.client_keys
    if in_place:  # as a crashed editor or a full disk leaves it
        with open(path, "r+b") as handle:
            handle.truncate(0)
            handle.write(data)
    else:
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)


def _keep(manager: ManagerProcess, keys: list[AgentKey]) -> None:
    _write(manager, b"".join(key.line().encode() + b"\n" for key in keys), in_place=False)


async def _keys_reload(manager: ManagerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, "agentpulse", "keys", "reload", *args, home=manager.root)


def _in_db(manager: ManagerProcess) -> set[int]:
    return {row[0] for row in manager.query("SELECT id FROM agent WHERE id != 0")}


def _start(manager: ManagerProcess, workers: int) -> list[AgentKey]:
    manager.settings.workers = workers
    manager.settings.database = ""  # the product default: purge_removed yes
    keys = manager.add_agents(FLEET)
    manager.start()
    return keys


WORKERS = pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "2-workers"])


# -- broken files -------------------------------------------------------------------------------------------


@WORKERS
@pytest.mark.parametrize("breakage", BREAKAGES, ids=[b.name for b in BREAKAGES])
def test_a_broken_keys_file_is_refused_and_the_fleet_stays(
    manager: ManagerProcess, workers: int, breakage: Breakage
) -> None:
    keys = _start(manager, workers)
    good = manager.home.client_keys.read_bytes()

    async def scenario() -> subprocess.CompletedProcess[str]:
        connections = await _fleet(manager, keys)
        _write(manager, breakage.damage(good), in_place=True)
        if breakage.trigger == "sighup":
            manager.signal(signal.SIGHUP)
        await _settle(manager, 1)
        assert _in_db(manager) == {key.number for key in keys}, manager.output()[-3000:]
        assert set(manager.statuses().values()) == {("active", 0)}
        await _still_served(connections)
        # --force accepts removals, never invalid lines: a file that only removes is asked without it
        answer = await _keys_reload(manager, *(["--force"] if breakage.invalid_line else []))
        await _still_served(connections)
        for connection in connections:
            connection.close()
        return answer

    answer = asyncio.run(scenario())
    assert answer.returncode == 1 and answer.stdout.startswith("client.keys reload refused: "), answer
    if breakage.invalid_line is None:
        assert "removes 5 of 5 agents" in answer.stdout
    else:
        assert f"{breakage.invalid_line}: " in answer.stdout
        assert "never accepted, not even with --force" in answer.stdout
    assert _refusals(manager) >= 2
    log = manager.output()
    assert "ERROR" in log and "client.keys reload refused" in log
    status = run_cli("agentpulse", "status", home=manager.root)
    assert "client.keys reloads: 0 accepted" in status.stdout and "last refused" in status.stdout


# -- legitimate removals, and --force ---------------------------------------------------------------------


@WORKERS
def test_removing_one_agent_is_accepted_and_every_worker_refuses_its_key_at_once(
    manager: ManagerProcess, workers: int
) -> None:
    keys = _start(manager, workers)

    async def scenario() -> subprocess.CompletedProcess[str]:
        connections = await _fleet(manager, keys)
        _keep(manager, keys[:-1])
        answer = await _keys_reload(manager)
        await _refused_now(manager, keys[-1], attempts=4 * workers)
        assert await connections[-1].receive(timeout=5) is None  # its connection was let go
        await _still_served(connections[:-1])
        for connection in connections[:-1]:
            connection.close()
        return answer

    answer = asyncio.run(scenario())
    assert answer.returncode == 0, answer
    # the 1 s check may have taken the file first: then this reload found nothing more to remove
    assert answer.stdout in (
        "client.keys reload accepted: 4 agents, +0 -1\n",
        "client.keys reload accepted: 4 agents, +0 -0\n",
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and keys[-1].number in _in_db(manager):
        time.sleep(0.05)
    assert _in_db(manager) == {key.number for key in keys[:-1]}


@WORKERS
def test_removing_four_of_five_is_refused_then_accepted_with_force(
    manager: ManagerProcess, workers: int
) -> None:
    keys = _start(manager, workers)

    async def scenario() -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
        connections = await _fleet(manager, keys)
        _keep(manager, keys[:1])
        manager.signal(signal.SIGHUP)
        await _settle(manager, 1)
        assert _in_db(manager) == {key.number for key in keys}
        await _still_served(connections)
        refused = await _keys_reload(manager)
        await _still_served(connections)
        forced = await _keys_reload(manager, "--force")
        for key in keys[1:]:
            await _refused_now(manager, key, attempts=2 * workers)
        await _still_served(connections[:1])
        for connection in connections:
            connection.close()
        return refused, forced

    refused, forced = asyncio.run(scenario())
    assert refused.returncode == 1
    assert refused.stdout.startswith(
        "client.keys reload refused: it removes 4 of 5 agents, more than the 1 allowed at once"
    ), refused.stdout
    assert "agentpulse keys reload --force" in refused.stdout
    assert (forced.returncode, forced.stdout) == (
        0,
        "client.keys reload accepted: 1 agents, +0 -4 (forced)\n",
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(_in_db(manager)) > 1:
        time.sleep(0.05)
    assert _in_db(manager) == {keys[0].number}


def test_the_removal_limits_come_from_ossec_conf(manager: ManagerProcess) -> None:
    manager.settings.extra_remote = "<keys_reload_max_removed_percent>100</keys_reload_max_removed_percent>"
    keys = _start(manager, 1)
    _keep(manager, keys[:1])
    answer = run_cli("agentpulse", "keys", "reload", home=manager.root)
    assert answer.returncode == 0 and answer.stdout.startswith("client.keys reload accepted: 1 agents"), (
        answer
    )


# -- at start ----------------------------------------------------------------------------------------------


def test_a_start_with_a_file_lacking_most_agents_purges_none_until_forced(manager: ManagerProcess) -> None:
    keys = _start(manager, 1)
    manager.stop()
    _keep(manager, keys[:1])
    manager.start()
    assert _in_db(manager) == {key.number for key in keys}
    log = manager.output()
    assert "client.keys lacks 4 of the 5 agents global.db has" in log
    assert "NOT purged; `agentpulse keys reload --force` purges them" in log
    assert _refusals(manager) == 1
    refused = run_cli("agentpulse", "keys", "reload", home=manager.root)
    assert refused.returncode == 1 and "removes 4 of 5 agents" in refused.stdout
    forced = run_cli("agentpulse", "keys", "reload", "--force", home=manager.root)
    assert forced.returncode == 0, forced
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(_in_db(manager)) > 1:
        time.sleep(0.05)
    assert _in_db(manager) == {keys[0].number}


def test_a_start_with_an_invalid_file_serves_its_valid_lines_and_purges_nothing(
    manager: ManagerProcess,
) -> None:
    keys = _start(manager, 1)
    manager.stop()
    good = manager.home.client_keys.read_bytes()
    _write(manager, good[: len(good) // 2], in_place=True)  # lines 1 and 2, and half of line 3
    manager.start()
    assert _in_db(manager) == {key.number for key in keys}
    assert "client.keys has 1 invalid line: line 3: key of" in manager.output()

    async def scenario() -> None:
        connection = await _connect(manager, keys[0])
        await _refused_now(manager, keys[3], attempts=1)
        connection.close()

    asyncio.run(scenario())
