"""`agentpulse simulate --agents 5000` against a real manager: all connected and acked, all listed Active."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.e2e.harness import LOOPBACK, ManagerProcess, ManagerSettings, agentpulse_bin, run_cli

FLEET = 5000


@pytest.mark.load
def test_simulate_5000_agents_all_acked_and_listed_active(tmp_path: Path) -> None:
    # A long grace: the listing must not depend on how fast the simulator's sockets close afterwards.
    manager = ManagerProcess(tmp_path / "ossec", ManagerSettings(connection_grace=60))
    manager.start()
    command = [
        agentpulse_bin("agentpulse"),
        "simulate",
        "--manager",
        f"{LOOPBACK}:{manager.port}",
        "--agents",
        str(FLEET),
        "--create-keys",
        str(manager.home.client_keys),
        "--interval",
        "5",
        "--ramp",
        "3",
        "--duration",
        "50",  # ended early by SIGINT once the manager lists everyone
        "--progress",
        "never",
        "--json-out",
        str(tmp_path / "summary.json"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        manager.wait_for_all("active", FLEET, timeout=40)
        listing = run_cli("agent_control", "-lc", home=manager.root)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        manager.stop()
    summary = json.loads(stdout)
    assert process.returncode == 0, f"{summary}\n{stderr}"
    assert (summary["agents"], summary["connected"], summary["acked"]) == (FLEET, FLEET, FLEET)
    assert summary["errors"] == 0, summary["error_kinds"]
    assert summary["keepalives_acked"] >= FLEET
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert listing.returncode == 0, listing.stderr
    lines = [
        line for line in listing.stdout.splitlines() if line.startswith("   ID: ") and "(server)" not in line
    ]
    assert len(lines) == FLEET
    assert all(line.endswith(", Active") for line in lines)
