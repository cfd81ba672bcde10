"""Overload without collapse: a storm of 2,900 agents connecting at once against one remoted slowed to
1 ms per message (the test-only AGENTPULSE_TEST_SLOWDOWN_MS), while 100 established agents keep talking
every second.

Unpaced, the storm's startups are read in one loop iteration of ~3 s, then their first keep-alives in
another: every established agent's keep-alive waits behind them. Paced (remoted/acceptor.py), established
agents are answered ahead of the storm, nobody who kept a connection is disconnected (code 4 or 6),
every agent ends active, and the manager logs no traceback. About 85 s (on a shared machine the
storm takes 10-60 s to be served).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.harness import LOOPBACK, ManagerProcess, ManagerSettings, agentpulse_bin

ESTABLISHED, STORM = 100, 2900
SLOWDOWN_MS = 1
RUN_S = 75


def _simulate(
    manager: ManagerProcess, keys: Path, agents: int, out: Path, *extra: str
) -> subprocess.Popen[str]:
    command = [
        agentpulse_bin("agentpulse"),
        "simulate",
        "--manager",
        f"{LOOPBACK}:{manager.port}",
        "--agents",
        str(agents),
        "--keys",
        str(keys),
        "--progress",
        "never",
        "--json-out",
        str(out),
        *extra,
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.timeout(180)
def test_a_storm_against_a_slow_worker_loses_nobody(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTPULSE_TEST_SLOWDOWN_MS", str(SLOWDOWN_MS))
    manager = ManagerProcess(
        tmp_path / "ossec",
        ManagerSettings(
            keepalive_enabled=True,
            keepalive_interval=20,
            keepalive_timeout=40,
            disconnection_time="30",
            connection_grace=60,  # the simulators' sockets close at their end, after the statuses are read
            workers=1,
        ),
    )
    established = manager.add_agents(ESTABLISHED, prefix="established")
    storm = manager.add_agents(STORM, prefix="storm")
    (tmp_path / "established.keys").write_text("".join(key.line() + "\n" for key in established))
    (tmp_path / "storm.keys").write_text("".join(key.line() + "\n" for key in storm))
    manager.start()
    talking = _simulate(
        manager,
        tmp_path / "established.keys",
        ESTABLISHED,
        tmp_path / "established.json",
        *("--interval", "1", "--ramp", "1", "--duration", str(RUN_S)),
    )
    storming: subprocess.Popen[str] | None = None
    try:
        time.sleep(5)  # established first
        storming = _simulate(
            manager,
            tmp_path / "storm.keys",
            STORM,
            tmp_path / "storm.json",
            *("--interval", "15", "--ramp", "0", "--duration", str(RUN_S - 10)),
        )
        storming.wait(timeout=RUN_S + 60)
        # Before the simulators' sockets close and the grace runs out, every status is read.
        statuses = manager.statuses()
        disconnections = manager.query(
            "SELECT agent_id, status_code, reason FROM agent_status_history WHERE to_status = 'disconnected'"
        )
        talking.wait(timeout=60)
    finally:
        for process in (talking, storming):
            if process is not None and process.poll() is None:
                process.kill()
        manager.stop()
    steady = json.loads((tmp_path / "established.json").read_text())
    stormed = json.loads((tmp_path / "storm.json").read_text())
    assert [tuple(row) for row in disconnections] == []
    assert (steady["connected"], steady["acked"], steady["errors"]) == (ESTABLISHED, ESTABLISHED, 0), steady
    assert (stormed["connected"], stormed["acked"]) == (STORM, STORM), stormed
    assert sum(1 for status, _ in statuses.values() if status == "active") == ESTABLISHED + STORM
    # The established agents were answered ahead of the storm (unpaced, on the shared machine: p99 6.7 s,
    # max 8.0 s and 5 acks over 10 s; paced: p99 2.7 s, max 3.1 s), and no storm agent was refused for
    # a slowness that was the manager's (unpaced: 637 refused by max_unauthenticated_per_ip). Storm
    # agents refused at once because the queue held more than 20 s of work retry, and count as retries.
    # An order, not a bound in milliseconds (the suite shares the machine with itself): the established
    # agents' slow acks come before the storm's typical startup answer, and none near an agent's own 60 s.
    assert steady["ack_latency_ms"]["p99"] < stormed["startup_latency_ms"]["p50"], (steady, stormed)
    assert steady["ack_latency_ms"]["max"] < 30_000, steady["ack_latency_ms"]
    assert "max_unauthenticated_per_ip" not in manager.output()
    assert "Traceback" not in manager.output()
    assert "TEST ONLY" in manager.output()
