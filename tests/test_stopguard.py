"""StopGuard ends the process: at its deadline, or at once when forced; 0 only if everything was committed."""

from __future__ import annotations

import subprocess
import sys
import time

SCRIPT = """
import logging, sys, time
from agentpulse.stopguard import StopGuard
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
guard = StopGuard(deadline=float(sys.argv[1]))
guard.committed = sys.argv[2] == "committed"
guard.arm()
if sys.argv[3] == "force":
    guard.force("a second SIGTERM")
time.sleep(30)  # a stop that never ends
"""


def _run(deadline: float, committed: str, force: str) -> tuple[int, float, str]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(deadline), committed, force],
        capture_output=True,
        text=True,
        timeout=20,
    )
    return done.returncode, time.monotonic() - started, done.stderr


def test_a_stop_that_hangs_ends_at_the_deadline_with_status_1() -> None:
    code, took, err = _run(0.5, "pending", "no")
    assert code == 1
    assert took < 10
    assert "Stop forced (the stop took more than" in err
    assert "restored from the acknowledgement journal" in err


def test_a_forced_stop_after_the_last_commit_ends_at_once_with_status_0() -> None:
    code, took, err = _run(60, "committed", "force")
    assert code == 0
    assert took < 10
    assert "Stop forced (a second SIGTERM)" in err
    assert "journal" not in err
