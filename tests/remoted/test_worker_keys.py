"""A worker's keys: the manager's KEYS commands and enrolment's ADD_KEYS, in the order they were sent.

A KEYS command is parsed off the loop, so enrolment's lines that came after it arrive first: they must
survive it. A later KEYS holds them already (the manager's key store lines), and may remove them.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from agentpulse.config import Config
from agentpulse.paths import Home
from agentpulse.remoted.pipe import Command
from agentpulse.remoted.worker_process import WorkerProcess

KEY = "ab" * 32
OLD = f"001 web-01 any {KEY}"
NEW = f"002 enrolled any {KEY}"


def test_enrolled_lines_survive_a_reload_sent_before_them_and_go_with_one_sent_after(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[int], list[int]]:
        ours, theirs = socket.socketpair()
        try:
            worker = WorkerProcess(Home(tmp_path), Config(), 1, theirs)
            worker._on_commands([(Command.KEYS, 1, OLD + "\n"), (Command.ADD_KEYS, 1, [NEW], None, None)])
            for _ in range(200):
                if worker._keys_generation == 1:
                    break
                await asyncio.sleep(0.01)
            after_first = sorted(worker.keys.lines)
            worker._on_commands([(Command.KEYS, 2, OLD + "\n")])  # the manager removed it since
            for _ in range(200):
                if worker._keys_generation == 2:
                    break
                await asyncio.sleep(0.01)
            return after_first, sorted(worker.keys.lines)
        finally:
            ours.close()
            theirs.close()

    assert asyncio.run(scenario()) == ([1, 2], [1])
