"""`run()`: one simulation from checked plan to JSON summary, in this process or spread over spawned ones.

Everything that can make the run impossible (ports per source, keys that may not connect from loopback,
the open-file limit) is checked here, before any process or socket exists. With one process the fleet
runs on a uvloop in this thread; SIGINT/SIGTERM end the run early, with a summary either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Sequence

from agentpulse.simulator.fleet import FleetProcess
from agentpulse.simulator.plan import (
    FD_HEADROOM,
    SimulatorConfig,
    check_ports,
    raise_fd_limit,
    source_addresses,
    source_for,
    split_members,
)
from agentpulse.simulator.report import Progress, summarize
from agentpulse.simulator.snapshot import Snapshot
from agentpulse.simulator.spawn import run_spawned
from agentpulse.wire.keys import AgentKey


def run(
    config: SimulatorConfig, keys: Sequence[AgentKey], progress: Progress | None = None
) -> dict[str, object]:
    """Simulate the fleet and return the summary. SIGINT/SIGTERM end the run early, with a summary."""
    if len(keys) != config.agents:
        raise ValueError(f"{len(keys)} keys for {config.agents} agents")
    check_ports(config)
    sources = source_addresses(config.sources)
    for index, key in enumerate(keys):
        source_for(key, index, sources)  # a key this machine cannot speak for fails here, not in a child
    members = split_members(keys, config.processes)
    raise_fd_limit(len(members[0]) + FD_HEADROOM)  # checked before anything starts
    try:
        if config.processes == 1:
            snapshot = _run_here(config, members[0], progress)
        else:
            snapshot = run_spawned(config, members, progress)
    finally:
        if progress is not None:
            progress.finish()
    return summarize(config, snapshot)


def _run_here(
    config: SimulatorConfig, members: list[tuple[int, AgentKey]], progress: Progress | None
) -> Snapshot:
    import uvloop

    report = progress.update if progress is not None and progress.enabled else None
    fleet = FleetProcess(config, members, report)

    async def main() -> Snapshot:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.add_signal_handler(signum, fleet.stop)
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(signal.SIGUSR1, fleet.mark_steady)  # one process: the window starts now
        return await fleet.run()

    # uvloop leaves its own (closed) loop's handlers installed: give the caller back its own.
    previous = {
        signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
    }
    try:
        return uvloop.run(main())
    finally:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in previous.items():
                signal.signal(signum, handler)
