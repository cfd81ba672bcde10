"""2,000 healthy agents for 60 s, manager keep-alive interval 2 s and timeout 5 s, while another fleet
hammers the manager in a closed loop: not one disconnection is recorded."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import LOOPBACK, ManagerProcess, ManagerSettings, agentpulse_bin

HEALTHY, LOAD = 2000, 200
RUN_S = 60


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
        "--ramp",
        "5",
        "--duration",
        str(RUN_S + 5),
        "--progress",
        "never",
        "--json-out",
        str(out),
        *extra,
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


@pytest.mark.load
def test_two_thousand_healthy_agents_are_never_disconnected_under_load(tmp_path: Path) -> None:
    manager = ManagerProcess(
        tmp_path / "ossec",
        # A long grace: the simulators' sockets close at their end, before the statuses are read.
        ManagerSettings(
            keepalive_enabled=True, keepalive_interval=2, keepalive_timeout=5, workers=2, connection_grace=60
        ),
    )
    healthy = manager.add_agents(HEALTHY, prefix="healthy")
    load = manager.add_agents(LOAD, prefix="load")
    (tmp_path / "healthy.keys").write_text("".join(key.line() + "\n" for key in healthy))
    (tmp_path / "load.keys").write_text("".join(key.line() + "\n" for key in load))
    manager.start()
    fleet = _simulate(
        manager, tmp_path / "healthy.keys", HEALTHY, tmp_path / "healthy.json", "--interval", "1"
    )
    hammer = _simulate(
        manager,
        tmp_path / "load.keys",
        LOAD,
        tmp_path / "load.json",
        "--peak",
        "--precompute",
        "--interval",
        "1",
    )
    try:
        fleet.wait(timeout=RUN_S + 60)
        hammer.wait(timeout=60)
        # Before the simulators' sockets close and the grace runs out, every status is read.
        statuses = manager.statuses()
        disconnections = manager.query(
            "SELECT agent_id, status_code FROM agent_status_history WHERE to_status = 'disconnected'"
        )
    finally:
        for process in (fleet, hammer):
            if process.poll() is None:
                process.kill()
        manager.stop()
    summary = json.loads((tmp_path / "healthy.json").read_text())
    load_summary = json.loads((tmp_path / "load.json").read_text())
    assert (summary["connected"], summary["acked"], summary["errors"]) == (HEALTHY, HEALTHY, 0), summary
    assert load_summary["keepalives_acked"] > summary["keepalives_acked"]  # the manager was under load
    assert [tuple(row) for row in disconnections] == []
    healthy_ids = {key.number for key in healthy}
    assert all(statuses[agent_id] == ("active", 0) for agent_id in healthy_ids)
