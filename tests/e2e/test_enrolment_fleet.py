"""A thousand agents enrol at once (`agentpulse simulate --enrol`), while manage_agents edits client.keys
too: a thousand distinct ids, one client.keys holding every line of both writers, then all connected and
Active. A fleet test that needs no keys made beforehand."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from agentpulse.wire.keys import KeysFile
from tests.e2e.harness import LOOPBACK, ManagerProcess, ManagerSettings, agentpulse_bin, run_cli

FLEET = 1000
BY_HAND = 5


def test_a_thousand_agents_enrol_at_once_and_all_are_active(tmp_path: Path) -> None:
    manager = ManagerProcess(
        tmp_path / "ossec",
        ManagerSettings(
            connection_grace=60, auth="<max_connections>2000</max_connections><source_rate>0</source_rate>"
        ),
    )
    manager.start()
    command = [
        agentpulse_bin("agentpulse"),
        "simulate",
        "--manager",
        f"{LOOPBACK}:{manager.port}",
        "--agents",
        str(FLEET),
        "--enrol",
        "--enrol-port",
        str(manager.auth_port),
        "--enrol-concurrency",
        str(FLEET),
        "--interval",
        "5",
        "--ramp",
        "2",
        "--duration",
        "60",  # ended early by SIGINT once every agent is active
        "--progress",
        "never",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for n in range(BY_HAND):  # the other writer of client.keys, at the same time
            added = run_cli("manage_agents", "-a", "any", "-n", f"by-hand-{n}", home=manager.root)
            assert added.returncode == 0, added.stderr
            time.sleep(0.05)
        manager.wait_for_all("active", FLEET, timeout=90)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        manager.stop()
    summary = json.loads(stdout)
    assert process.returncode == 0, f"{summary}\n{stderr}"
    assert summary["enrolment"]["enrolled"] == FLEET
    assert (summary["connected"], summary["acked"], summary["errors"]) == (FLEET, FLEET, 0)
    keys = KeysFile.parse(manager.home.client_keys.read_text())
    assert keys.problems == []
    active = list(keys.active())
    assert len(active) == FLEET + BY_HAND  # no write of either writer lost
    assert len({key.id for key in active}) == FLEET + BY_HAND
    assert len({key.name for key in active}) == FLEET + BY_HAND
    assert sum(key.name.startswith("by-hand-") for key in active) == BY_HAND
    rows = manager.query("SELECT COUNT(*) FROM agent WHERE id > 0")[0][0]
    assert rows == FLEET + BY_HAND
    registered = manager.query(
        "SELECT COUNT(*) FROM agent_status_history WHERE from_status = 'never_connected' "
        "AND to_status = 'never_connected' AND status_code = 0"
    )[0][0]
    assert registered == FLEET
