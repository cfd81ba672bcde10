"""One manager per home: the pid file's lock."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agentpulse.manager import AlreadyRunning, HomeLock


def test_a_second_lock_on_the_same_home_is_refused_with_the_holders_pid_and_free_once_released(
    tmp_path: Path,
) -> None:
    path = tmp_path / "var" / "run" / "agentpulse.pid"
    first = HomeLock(path)
    first.acquire()
    assert path.read_text() == f"{os.getpid()}\n"
    with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}"):
        HomeLock(path).acquire()
    first.release()
    assert not path.exists()
    again = HomeLock(path)
    again.acquire()
    again.release()
