"""`make cluster-demo` for a few seconds: PostgreSQL, three NATS servers and three nodes come up, the fleet
spreads over the nodes, and everything is gone afterwards (no process, no PostgreSQL data)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from agentpulse.cluster.localpg import unavailable
from tests.e2e.harness import run_cli

AGENTS = 30


def test_the_demo_refuses_a_folder_postgres_cannot_reach(tmp_path: Path) -> None:
    if unavailable():
        pytest.skip(f"no throwaway PostgreSQL: {unavailable()}")
    tmp_path.chmod(0o700)  # pytest's own folders are private to root
    done = subprocess.run(
        [sys.executable, "-m", "agentpulse.cluster.demo", "--root", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert f"postgres cannot reach {tmp_path / 'demo' / 'postgresql'}" in done.stdout + done.stderr


def test_the_demo_starts_a_cluster_and_leaves_nothing_behind() -> None:
    if unavailable():
        pytest.skip(f"no throwaway PostgreSQL: {unavailable()}")
    base = Path(tempfile.mkdtemp(prefix="agentpulse-demo-"))
    base.chmod(0o755)  # the postgres user walks through it to its own folder
    try:
        run_demo(base / "demo")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_demo(root: Path) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "agentpulse.cluster.demo", "--root", str(root), "--agents", str(AGENTS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert demo.stdout is not None
        lines = []
        deadline = time.monotonic() + 90
        while "Ctrl-C stops everything." not in "".join(lines):
            assert time.monotonic() < deadline and demo.poll() is None, "".join(lines)
            lines.append(demo.stdout.readline())
        per_node = []
        for node in (1, 2, 3):
            home = root / f"node-{node}"
            deadline = time.monotonic() + 30
            while True:
                done = run_cli("agentpulse", "cluster", "status", "--home", str(home), home=home)
                if f"node-{node}           {AGENTS // 3} active" in done.stdout:
                    break
                assert time.monotonic() < deadline, done.stdout + done.stderr
                time.sleep(0.5)
            assert done.stdout.count(" up: server n") == 3, done.stdout
            assert done.stdout.count("lease live") == 3, done.stdout  # one PostgreSQL for the three nodes
            assert "Stream AGENT_STATUS: 3 replica(s)" in done.stdout
            per_node.append(done.stdout)
        demo.terminate()  # as Ctrl-C: stops everything in order
        demo.wait(60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 0
    assert not (root / "postgresql").exists()
    leftovers = subprocess.run(["pgrep", "-f", str(root)], capture_output=True, text=True)
    assert leftovers.stdout == "", leftovers.stdout
