"""A fleet spread over spawned processes: each child runs a `FleetProcess` on its own uvloop.

The parent and each child talk over one pipe: the child says `ready` once its agents' ciphers are made,
the parent says `go` to all at once, the child reports `stats` snapshots and a `final` one, and the parent
says `stop` on SIGINT/SIGTERM or when a child never got ready. The danger is a child that dies or hangs:
every wait is bounded, a child that does not finish is terminated, and what it reported last is counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import multiprocessing.process
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Final, cast

from agentpulse.simulator.fleet import FleetProcess
from agentpulse.simulator.plan import SimulatorConfig, SimulatorError
from agentpulse.simulator.report import Progress
from agentpulse.simulator.snapshot import Snapshot, add_count
from agentpulse.wire.keys import AgentKey, parse_line

SETUP_TIMEOUT: Final = 120.0  # spawning a process and preparing its agents' ciphers
STOP_TIMEOUT: Final = 15.0  # after `duration`, how long processes may take to report before being killed
POLL: Final = 0.2  # the parent's longest wait for a message, so it notices a signal or a deadline


@dataclass(frozen=True, slots=True)
class FleetProcessSpec:
    """What a spawned process needs: the configuration and its agents (global index, client.keys line)."""

    config: SimulatorConfig
    members: list[tuple[int, str]]


# -- the child -------------------------------------------------------------------------------------------


def _child_main(conn: multiprocessing.connection.Connection, spec: FleetProcessSpec) -> None:
    """Entry point of a spawned process."""
    # The parent coordinates: a terminal's Ctrl-C reaches the whole process group, the parent says stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import uvloop

    try:
        uvloop.run(_child_async(conn, spec))
    except BaseException as error:
        with contextlib.suppress(OSError, ValueError):
            conn.send(("error", f"{type(error).__name__}: {error}"))
    finally:
        conn.close()


async def _child_async(conn: multiprocessing.connection.Connection, spec: FleetProcessSpec) -> None:
    loop = asyncio.get_running_loop()
    members: list[tuple[int, AgentKey]] = []
    for index, line in spec.members:
        key = parse_line(line)
        if key is None:
            raise SimulatorError(f"unreadable key line for agent {index}")
        members.append((index, key))
    fleet: FleetProcess

    def report(snapshot: Snapshot) -> None:
        try:
            conn.send(("stats", snapshot))
        except OSError:  # the parent is gone
            fleet.stop()

    fleet = FleetProcess(spec.config, members, report)
    go: asyncio.Future[None] = loop.create_future()

    def release() -> None:
        if not go.done():
            go.set_result(None)

    def readable() -> None:
        try:
            while conn.poll():
                message = conn.recv()
                if message[0] == "go":
                    release()
                elif message[0] == "stop":
                    fleet.stop()
                    release()
        except (EOFError, OSError):  # the parent is gone
            loop.remove_reader(conn.fileno())
            fleet.stop()
            release()

    loop.add_reader(conn.fileno(), readable)

    def terminate() -> None:
        fleet.stop()
        release()

    loop.add_signal_handler(signal.SIGTERM, terminate)
    conn.send(("ready", None))
    await asyncio.wait_for(go, SETUP_TIMEOUT)
    snapshot = await fleet.run()
    loop.remove_reader(conn.fileno())
    conn.send(("final", snapshot))


# -- the parent ------------------------------------------------------------------------------------------


class _Children:
    """The parent's side: the spawned processes, their pipes, and what each has reported so far."""

    def __init__(self, config: SimulatorConfig, members: list[list[tuple[int, AgentKey]]]) -> None:
        self.config = config
        self.members = members
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.conns: list[multiprocessing.connection.Connection] = []
        self.open_conns: dict[int, multiprocessing.connection.Connection] = {}
        self.ready: set[int] = set()
        self.latest: dict[int, Snapshot] = {}
        self.finals: dict[int, Snapshot] = {}
        self.stop_requested = False

    def on_signal(self, signum: int, frame: object) -> None:
        self.stop_requested = True

    def start(self) -> None:
        context = multiprocessing.get_context("spawn")
        for number, part in enumerate(self.members):
            parent_end, child_end = context.Pipe()
            spec = FleetProcessSpec(self.config, [(index, key.line()) for index, key in part])
            process = context.Process(
                target=_child_main, args=(child_end, spec), name=f"agentpulse-simulate-{number}", daemon=True
            )
            process.start()
            child_end.close()
            self.processes.append(process)
            self.conns.append(parent_end)
        self.open_conns = dict(enumerate(self.conns))

    def receive(self, timeout: float) -> None:
        by_conn = {id(conn): number for number, conn in self.open_conns.items()}
        for conn in multiprocessing.connection.wait(list(self.open_conns.values()), timeout):
            number = by_conn[id(conn)]
            try:
                kind, payload = cast(multiprocessing.connection.Connection, conn).recv()
            except (EOFError, OSError):
                del self.open_conns[number]
                continue
            if kind == "ready":
                self.ready.add(number)
            elif kind == "stats":
                self.latest[number] = payload
            elif kind == "final":
                self.finals[number] = payload
            elif kind == "error":
                print(f"agentpulse simulate: worker {number}: {payload}", file=sys.stderr)

    def wait_ready(self) -> None:
        """Until every process is ready (or gone, or a signal came, or SETUP_TIMEOUT), then `go` to the ready."""
        deadline = time.monotonic() + SETUP_TIMEOUT
        while (
            len(self.ready) < len(self.processes)
            and self.open_conns
            and time.monotonic() < deadline
            and not self.stop_requested
        ):
            self.receive(POLL)
        for number in self.ready:
            with contextlib.suppress(OSError):
                self.conns[number].send(("go", None))

    def wait_finals(self, progress: Progress | None) -> None:
        """Until every process sent its final snapshot (bounded); `stop` to all on a signal or a missing one."""
        stop_sent = False
        deadline = time.monotonic() + self.config.duration + STOP_TIMEOUT
        while self.open_conns and len(self.finals) < len(self.processes) and time.monotonic() < deadline:
            if (self.stop_requested or len(self.ready) < len(self.processes)) and not stop_sent:
                stop_sent = True
                for conn in self.open_conns.values():
                    with contextlib.suppress(OSError):
                        conn.send(("stop", None))
            self.receive(POLL)
            if progress is not None and self.latest and progress.due():
                progress.update(Snapshot.merged(list(self.latest.values())))

    def reap(self) -> None:
        """Join every process, terminating then killing one that does not end; close the pipes."""
        for child in self.processes:
            child.join(timeout=max(0.1, STOP_TIMEOUT / len(self.processes)))
            if child.is_alive():
                child.terminate()
                child.join(timeout=2)
            if child.is_alive():
                child.kill()
                child.join(timeout=2)
        for conn in self.conns:
            conn.close()

    def total(self) -> Snapshot:
        members = self.members
        failures: dict[str, int] = {}
        parts = [
            self.finals.get(number) or self.latest.get(number) or Snapshot() for number in range(len(members))
        ]
        for number in range(len(members)):
            if (
                number not in self.finals
            ):  # died, hung or never started: what it reported last is all there is
                add_count(failures, "worker_unfinished")
                parts[number].agents = len(members[number])
        total = Snapshot.merged(parts)
        total.processes = len(self.processes)
        for kind, amount in failures.items():
            add_count(total.errors, kind, amount)
        return total


def run_spawned(
    config: SimulatorConfig, members: list[list[tuple[int, AgentKey]]], progress: Progress | None
) -> Snapshot:
    """Run each part of `members` in a spawned process; the merged snapshot of them all."""
    children = _Children(config, members)
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous = {
            signum: signal.signal(signum, children.on_signal) for signum in (signal.SIGINT, signal.SIGTERM)
        }
    try:
        children.start()
        children.wait_ready()
        children.wait_finals(progress)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        children.reap()
    return children.total()
