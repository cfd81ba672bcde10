"""UDP with several remoted workers (issue 17, item 9): every worker shares the datagram port, and no
way out of the manager (SIGTERM during or after the start, a worker that cannot start, kill -9) leaves a
worker behind holding the port."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from agentpulse.agent.connection import AgentCodec, AgentConnection
from agentpulse.wire import control
from agentpulse.wire.keys import AgentKey
from tests.e2e.harness import LOOPBACK, ManagerProcess, agentpulse_bin, wait_until
from tests.e2e.test_statuses import KEEPALIVE

AGENTS = 24
WORKERS = 2


def _workers_of(root: Path) -> list[int]:
    """Live processes that are remoted workers of this home (any parent: orphans included)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as handle:
                state = handle.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and b"worker" in argv and str(root).encode() in argv:
            found.append(int(entry))
    return found


def _udp_port_is_free(port: int) -> bool:
    """A fresh bind without SO_REUSEPORT fails while any socket (a worker's included) holds the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _udp_manager(manager: ManagerProcess) -> list[AgentKey]:
    manager.settings.protocols = "udp"
    manager.settings.workers = WORKERS
    return manager.add_agents(AGENTS)


async def _up(manager: ManagerProcess, key: AgentKey) -> AgentConnection:
    connection = await AgentConnection.open(AgentCodec(key, tcp=False), LOOPBACK, manager.port)
    connection.send(control.build_startup("v4.14.7"))
    assert await connection.receive(5) == control.Ack()
    connection.send(KEEPALIVE)
    assert await connection.receive(5) == control.Ack()
    return connection


def _kill_leftovers(root: Path) -> None:
    for pid in _workers_of(root):
        os.kill(pid, signal.SIGKILL)


def test_udp_agents_become_active_on_two_workers_and_stay_active(manager: ManagerProcess) -> None:
    keys = _udp_manager(manager)
    manager.start()
    assert len(_workers_of(manager.root)) == WORKERS

    async def scenario() -> None:
        connections = [await _up(manager, key) for key in keys]
        await manager.reach_all("active", AGENTS)
        # Each agent's datagrams keep reaching one worker: every keep-alive is answered, none is refused.
        for _ in range(3):
            await asyncio.sleep(0.5)
            for connection in connections:
                connection.send(KEEPALIVE)
            for connection in connections:
                assert await connection.receive(5) == control.Ack()
        for connection in connections:
            connection.close()

    asyncio.run(scenario())
    assert all(seen == ("active", 0) for seen in manager.statuses().values()), manager.statuses()
    for key in keys:
        assert manager.history(key.number) == [("never_connected", "pending", 0), ("pending", "active", 0)]
    assert "refused" not in manager.output()
    assert manager.stop() == 0


def test_a_simulated_udp_fleet_on_two_workers_is_acked_and_stays_active(
    manager: ManagerProcess, tmp_path: Path
) -> None:
    keys = _udp_manager(manager)
    (tmp_path / "fleet.keys").write_text("".join(key.line() + "\n" for key in keys))
    manager.start()
    summary_path = tmp_path / "fleet.json"
    command = [
        *("simulate", "--manager", f"{LOOPBACK}:{manager.port}", "--protocol", "udp"),
        *("--agents", str(AGENTS), "--keys", str(tmp_path / "fleet.keys"), "--processes", "1"),
        *("--interval", "1", "--ramp", "1", "--duration", "6", "--progress", "never"),
        *("--json-out", str(summary_path)),
    ]
    simulate = subprocess.run(
        [agentpulse_bin("agentpulse"), *command], capture_output=True, text=True, timeout=60
    )
    assert simulate.returncode == 0, simulate.stderr[-3000:]
    summary = json.loads(summary_path.read_text())
    assert (summary["acked"], summary["errors"]) == (AGENTS, 0), summary
    assert summary["keepalives_acked"] >= AGENTS * 3
    assert all(seen == ("active", 0) for seen in manager.statuses().values()), manager.statuses()
    assert manager.query("SELECT agent_id FROM agent_status_history WHERE to_status = 'disconnected'") == []


def test_sigterm_stops_udp_workers_and_frees_the_port(manager: ManagerProcess) -> None:
    keys = _udp_manager(manager)
    manager.start()

    async def scenario() -> None:
        connection = await _up(manager, keys[0])
        connection.close()

    asyncio.run(scenario())
    try:
        assert manager.stop() == 0
        output = manager.output()
        assert "INFO: Stopping" in output and "INFO: Stopped" in output, output[-3000:]
        assert _workers_of(manager.root) == []
        assert _udp_port_is_free(manager.port)
    finally:
        _kill_leftovers(manager.root)


def test_sigterm_while_the_workers_start_still_stops_cleanly(manager: ManagerProcess) -> None:
    _udp_manager(manager)
    manager.write_config()
    with open(manager.root / "manager.out", "ab") as log:
        process = subprocess.Popen(_start_command(manager), stdout=log, stderr=subprocess.STDOUT)
    try:
        # "Started:" comes right before the workers are spawned; they take a while to import and bind.
        wait_until(lambda: "Started:" in manager.output(), "the store to be open", timeout=20)
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0, manager.output()[-3000:]
        output = manager.output()
        assert "INFO: Stopping" in output and "INFO: Stopped" in output, output[-3000:]
        wait_until(lambda: _workers_of(manager.root) == [], "no worker left", timeout=2)
        assert _udp_port_is_free(manager.port)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        _kill_leftovers(manager.root)


def test_a_worker_that_cannot_bind_fails_the_start_with_one_error_and_no_orphan(
    manager: ManagerProcess,
) -> None:
    _udp_manager(manager)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # no SO_REUSEPORT: nobody may join
    squatter.bind((LOOPBACK, manager.port))
    manager.write_config()
    started = time.monotonic()
    try:
        result = subprocess.run(_start_command(manager), capture_output=True, text=True, timeout=30)
        assert result.returncode == 1, result.stderr[-3000:]
        assert time.monotonic() - started < 15  # not the 30 s ready timeout
        errors = [line for line in result.stderr.splitlines() if ": ERROR: " in line]
        assert len(errors) == 1, result.stderr[-3000:]
        assert "Cannot start: remoted worker" in errors[0]
        assert f"{LOOPBACK}:{manager.port}/udp" in errors[0] and "Address already in use" in errors[0]
        assert "Traceback" not in result.stderr
        assert _workers_of(manager.root) == []
    finally:
        squatter.close()
        _kill_leftovers(manager.root)


def test_kill_9_of_the_manager_takes_even_a_stuck_worker_with_it(manager: ManagerProcess) -> None:
    _udp_manager(manager)
    manager.start()
    workers = _workers_of(manager.root)
    assert len(workers) == WORKERS
    # A stopped worker cannot read the closed pipe: only the kernel (PR_SET_PDEATHSIG) can end it.
    os.kill(workers[0], signal.SIGSTOP)
    try:
        manager.kill()
        wait_until(lambda: _workers_of(manager.root) == [], "the workers to die with the manager", timeout=2)
        # The last socket goes with the last exit, which /proc can show a moment before it is done.
        wait_until(lambda: _udp_port_is_free(manager.port), "the UDP port to be free", timeout=2)
    finally:
        for pid in _workers_of(manager.root):
            os.kill(pid, signal.SIGCONT)
        _kill_leftovers(manager.root)


def _start_command(manager: ManagerProcess) -> list[str]:
    return [sys.executable, "-m", "agentpulse", "start", "--home", str(manager.root), "--log-level", "debug"]
