"""Prometheus /metrics of a real manager (the standalone listener) with real agent connections: the
figures match what the agents did, and agree with `agent_control -j` and `agentpulse status`."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import time
import urllib.request

import pytest

from agentpulse.agent.connection import AgentCodec, AgentConnection
from agentpulse.wire import control, enrolment
from agentpulse.wire.keys import AgentKey
from tests.e2e.harness import LOOPBACK, ManagerProcess, free_port, run_cli
from tests.e2e.test_enrolment import KEY_REPLY, exchange
from tests.e2e.test_statuses import KEEPALIVE
from tests.e2e.test_workers import _worker_pids

AGENTS = 12
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')

Scrape = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metrics_section(port: int) -> str:
    """The `<metrics>` block of a listener on loopback at `port`."""
    return f"<metrics><enabled>yes</enabled><host>{LOOPBACK}</host><port>{port}</port></metrics>"


def with_metrics(manager: ManagerProcess) -> int:
    port = free_port()
    manager.settings.sections = metrics_section(port)
    return port


def scrape(port: int) -> Scrape:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=5) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
        text = reply.read().decode()
    samples: Scrape = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match is not None, line
        labels = frozenset(_LABEL.findall(match.group(2) or ""))
        samples[(match.group(1), labels)] = float(match.group(3))
    return samples


def value(samples: Scrape, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def total(samples: Scrape, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels` (e.g. over workers)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= have)


def eventually(port: int, check: str, predicate: object, timeout: float = 10.0) -> Scrape:
    """Scrape until `predicate(scrape)` holds (workers report once a second); the last scrape."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(port)
        if predicate(samples):  # type: ignore[operator]
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"{check}: never true; last scrape {sorted(samples.items())[:80]}")
        time.sleep(0.2)


async def _up(manager: ManagerProcess, key: AgentKey) -> AgentConnection:
    connection = await AgentConnection.open(AgentCodec(key), LOOPBACK, manager.port)
    connection.send(control.build_startup("v4.14.7"))
    assert await connection.receive() == control.Ack()
    connection.send(KEEPALIVE)
    assert await connection.receive() == control.Ack()
    return connection


async def _bad_key(manager: ManagerProcess, victim: AgentKey) -> None:
    forged = AgentKey(victim.id, victim.name, victim.ip, "0" * 64)
    connection = await AgentConnection.open(AgentCodec(forged), LOOPBACK, manager.port)
    connection.send(control.build_startup("v4.14.7"))
    assert await connection.receive(timeout=5) is None  # refused: closed without an answer


def _cli_counts(manager: ManagerProcess) -> tuple[int, int]:
    """Active agents as `agent_control -j -l` (the manager's own line left out) and `agentpulse status` say."""
    listed = run_cli("agent_control", "-j", "-l", home=manager.root)
    assert listed.returncode == 0, listed.stderr
    data = json.loads(listed.stdout)["data"]
    by_control = sum(1 for agent in data if agent["id"] != "000" and agent["status"] == "Active")
    status = run_cli("agentpulse", "status", "--color", "never", home=manager.root)
    assert status.returncode == 0, status.stderr
    match = re.search(r"^\s+Active\s+(\d+)$", status.stdout, re.MULTILINE)
    assert match is not None, status.stdout
    return by_control, int(match.group(1))


def _check_fleet(manager: ManagerProcess, port: int, keys: list[AgentKey]) -> None:
    """N agents up, a keep-alive round, one bad-key connection; the scrape says exactly that."""

    async def scenario() -> None:
        connections = [await _up(manager, key) for key in keys[:-1]]
        await manager.reach_all("active", len(connections))
        before = eventually(
            port,
            "every connection counted",
            lambda s: (
                total(s, "agentpulse_worker_connections") == len(connections)
                and total(s, "agentpulse_keepalives_total") >= len(connections)
            ),
        )
        assert value(before, "agentpulse_agents", status="active") == len(connections)
        assert value(before, "agentpulse_agents", status="never_connected") == 1
        assert value(before, "agentpulse_agents", status="disconnected") == 0
        assert value(before, "agentpulse_agents_by_code", status="active", code="0") == len(connections)
        assert _cli_counts(manager) == (len(connections), len(connections))

        keepalives = total(before, "agentpulse_keepalives_total")
        for connection in connections:
            connection.send(KEEPALIVE)
            assert await connection.receive() == control.Ack()
        await _bad_key(manager, keys[-1])
        after = eventually(
            port,
            "the keep-alive round and the refusal counted",
            lambda s: (
                total(s, "agentpulse_keepalives_total") >= keepalives + len(connections)
                and total(s, "agentpulse_refusals_total") >= 1
            ),
        )
        assert total(after, "agentpulse_messages_total", kind="startup") == len(connections)
        # A forged key fails to decrypt: the padding check is the first to notice.
        assert total(after, "agentpulse_refusals_total", reason="bad_padding") == 1
        assert total(after, "agentpulse_refusals_total") == 1
        assert value(after, "agentpulse_agents", status="active") == len(connections)
        for connection in connections:
            connection.close()

    asyncio.run(scenario())


def test_metrics_of_one_process_match_the_agents_and_the_cli(manager: ManagerProcess) -> None:
    port = with_metrics(manager)
    keys = manager.add_agents(AGENTS + 1)
    manager.start()
    _check_fleet(manager, port, keys)
    # The sweeper runs once a second from the start: a fleet checked within the first second saw none yet.
    samples = eventually(port, "a sweep", lambda s: value(s, "agentpulse_sweeper_runs_total") >= 1)
    assert value(samples, "agentpulse_store_flush_seconds_count") >= 1
    assert value(samples, "agentpulse_nats_connected") == 0  # <nats> is off in these tests
    assert value(samples, "agentpulse_event_spool_depth") == 0
    assert "Metrics on http://127.0.0.1:" in manager.output()


def test_metrics_of_worker_processes_sum_to_the_fleet_and_survive_a_restart(manager: ManagerProcess) -> None:
    port = with_metrics(manager)
    manager.settings.workers = 2
    manager.settings.connection_grace = 5.0
    keys = manager.add_agents(AGENTS + 1)
    manager.start()
    _check_fleet(manager, port, keys)
    before = scrape(port)
    assert {labels for name, labels in before if name == "agentpulse_worker_up"} == {
        frozenset({("worker", "1")}),
        frozenset({("worker", "2")}),
    }
    victim = _worker_pids(manager)[0]
    os.kill(victim, signal.SIGKILL)
    after = eventually(
        port,
        "the restart counted",
        lambda s: (
            total(s, "agentpulse_worker_restarts_total") == 1
            and total(s, "agentpulse_worker_up") == 2
            and total(s, "agentpulse_worker_connections") == 0
        ),
        timeout=15,
    )
    # What the dead worker counted stays in its slot's counters: none goes back.
    assert total(after, "agentpulse_keepalives_total") >= total(before, "agentpulse_keepalives_total")
    assert total(after, "agentpulse_refusals_total", reason="bad_padding") == 1


def test_a_metrics_port_in_use_stops_the_start_with_one_line(manager: ManagerProcess) -> None:
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        manager.settings.sections = f"<metrics><enabled>yes</enabled><port>{port}</port></metrics>"
        manager.add_agents(1)
        with pytest.raises(RuntimeError, match=f"cannot listen on 127.0.0.1:{port} for metrics"):
            manager.start()


def test_enrolments_and_their_refusals_are_counted(manager: ManagerProcess) -> None:
    port = with_metrics(manager)
    manager.settings.auth = ""

    async def scenario() -> None:
        for name in ("web-01", "web-02"):
            assert KEY_REPLY.fullmatch(await exchange(manager, enrolment.build_request(name)))
        refused = await exchange(manager, enrolment.build_request("bad name"))
        assert refused.startswith(b"ERROR: Invalid agent name")

    manager.start()
    asyncio.run(scenario())
    samples = scrape(port)
    assert value(samples, "agentpulse_enrolments_total") == 2
    assert value(samples, "agentpulse_enrolment_refusals_total", reason="invalid_agent_name") == 1
    assert value(samples, "agentpulse_agents", status="never_connected") == 2
