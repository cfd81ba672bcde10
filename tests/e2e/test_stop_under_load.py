"""Clean stops under load: SIGTERM with agents talking ends within its deadline, every worker stopped and
everything committed; and a stop that hangs (here: the NATS server frozen with SIGSTOP) is forced by a
second SIGTERM. About 40 s for both."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.harness import LOOPBACK, ManagerProcess, ManagerSettings, agentpulse_bin

AGENTS = 600


def _simulate(manager: ManagerProcess, keys: Path, duration: float) -> subprocess.Popen[str]:
    command = [
        agentpulse_bin("agentpulse"),
        "simulate",
        *("--manager", f"{LOOPBACK}:{manager.port}", "--agents", str(AGENTS), "--keys", str(keys)),
        *("--interval", "1", "--ramp", "2", "--duration", str(duration), "--progress", "never"),
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)


def _wait_active(manager: ManagerProcess, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(1 for status, _ in manager.statuses().values() if status == "active") >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"not {count} agents active within {timeout} s")


@pytest.mark.timeout(120)
def test_sigterm_with_agents_talking_stops_every_worker_in_time_and_commits(tmp_path: Path) -> None:
    manager = ManagerProcess(tmp_path / "ossec", ManagerSettings(workers=2, connection_grace=60))
    keys = manager.add_agents(AGENTS)
    (tmp_path / "fleet.keys").write_text("".join(key.line() + "\n" for key in keys))
    manager.start()
    fleet = _simulate(manager, tmp_path / "fleet.keys", 60)
    try:
        _wait_active(manager, AGENTS, 40)
        time.sleep(1)
        started = time.monotonic()
        code = manager.stop(timeout=60)
        took = time.monotonic() - started
    finally:
        fleet.kill()
        fleet.wait()
    output = manager.output()
    assert code == 0, output[-3000:]
    assert took < 60, took  # StopGuard's deadline is 90 s; unloaded this takes a few seconds
    assert "did not stop in time" not in output
    assert "Stopped: every accepted status change is committed" in output
    assert "Traceback" not in output
    # Committed: the database holds every agent as the manager left it (the next start resets them).
    assert sum(1 for status, _ in manager.statuses().values() if status == "active") == AGENTS
    assert not list(manager.home.ack_journal_dir.glob("*")) or all(
        path.stat().st_size == 0 for path in manager.home.ack_journal_dir.glob("*")
    )


@pytest.mark.timeout(120)
def test_a_second_sigterm_forces_a_stop_that_hangs(tmp_path: Path) -> None:
    manager = ManagerProcess(
        tmp_path / "ossec",
        ManagerSettings(connection_grace=60, nats="<nats><enabled>yes</enabled></nats>"),
    )
    manager.add_agents(10)
    manager.start()
    found = re.search(
        r"Embedded nats-server started: \S+ \(JetStream store \S+, pid (\d+)\)", manager.output()
    )
    assert found, manager.output()[-2000:]
    nats_pid = int(found.group(1))
    os.kill(nats_pid, signal.SIGSTOP)  # the stop now waits on a server that never answers
    try:
        manager.signal(signal.SIGTERM)
        time.sleep(1.5)
        assert manager.process is not None and manager.process.poll() is None  # still stopping
        started = time.monotonic()
        manager.signal(signal.SIGTERM)
        code = manager.process.wait(timeout=10)
        took = time.monotonic() - started
    finally:
        with contextlib.suppress(ProcessLookupError):  # PDEATHSIG's SIGTERM waits while it is stopped
            os.kill(nats_pid, signal.SIGCONT)
            os.kill(nats_pid, signal.SIGKILL)
        manager.stop()
    output = manager.output()
    assert took < 5, took
    assert "Stop forced (a second SIGTERM)" in output, output[-2000:]
    assert code == 0  # forced after the last commit: nothing to restore
    assert "Traceback" not in output
