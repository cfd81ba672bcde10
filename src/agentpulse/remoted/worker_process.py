"""The main of one remoted worker process: it holds agent connections on the shared port (SO_REUSEPORT)
and sends what happens to the manager through the record pipe. The manager owns the store, the grace
tracker, the sweeper, events and the query socket; a worker owns its own key store, sessions, replies and
the manager keep-alive of its agents. (`worker_pool.py` is the manager's side.)

Its keys come from the manager only (`Command.KEYS`, and enrolment's `ADD_KEYS`): it never reads client.keys.
It binds the port only when told (`Command.LISTEN`): the manager starts it while the store resets the last
run's agents (code 5), so that loading the keys costs no time, and lets it take agents once the reset is
committed. It never outlives its manager: the kernel kills it when the manager dies (PR_SET_PDEATHSIG),
and a closed pipe stops it too; a worker left behind would hold the port, and the agents, with nobody to
tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
import time

from agentpulse.config import Config
from agentpulse.looplag import LoopLag
from agentpulse.paths import Home
from agentpulse.remoted import pipe, slowdown
from agentpulse.remoted.intake import build_intake
from agentpulse.remoted.journal import AckJournal, keep_for
from agentpulse.remoted.keystore import AcceptedLines, KeyStore
from agentpulse.remoted.pipe import Command, Tag
from agentpulse.remoted.pushes import SharedPushes
from agentpulse.remoted.replay import PipeReplayGuard
from agentpulse.remoted.scheduler import KeepaliveScheduler
from agentpulse.remoted.server import Remoted

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class WorkerProcess:
    def __init__(self, home: Home, config: Config, index: int, sock: socket.socket) -> None:
        self.home = home
        self.config = config
        self.index = index
        self.sock = sock
        self._stop = asyncio.Event()
        self.pipe = pipe.PipeEnd(self._on_commands, self._stop.set)
        self.sink = pipe.PipeSink(self.pipe)
        self.keys = KeyStore()
        self.journal = AckJournal(home.ack_journal_dir, index, keep_for(config.database.flush_interval))
        intake = build_intake(config, home, index, config.remote.worker_processes)  # events: straight to NATS
        self.lag = LoopLag()
        self.replay = PipeReplayGuard(self.sink)
        self.remoted = Remoted(
            config,
            self.keys,
            self.sink,
            self.sink,
            journal=self.journal,
            lag=self.lag,
            intake=intake,
            replay=self.replay,
        )
        self.scheduler = KeepaliveScheduler(self.remoted, config.remote.manager_keepalive, lag=self.lag)
        slowdown.apply(self.remoted)  # TEST ONLY, and only when its variable is set
        self.pushes = SharedPushes(self.remoted, self._pushed)
        self._keys_generation = -1  # of the keys in use
        self._listen_from = -1  # the LISTEN command's keys generation; -1: not told to listen yet
        self._may_listen = asyncio.Event()  # told to listen, and the keys in use are of that generation
        self._keys_tasks: set[asyncio.Task[None]] = set()
        # Enrolment's lines (ADD_KEYS), with the last KEYS generation received before them: a KEYS
        # command sent before them lacks them, so they are applied again on top of it.
        self._keys_received = -1
        self._added: list[tuple[int, list[str]]] = []

    async def run(self) -> int:
        """Serve until told to stop; 1 when the worker could not start (the manager was told why)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        # Ctrl-C and a hang-up reach the whole process group: the manager decides, and tells the workers.
        loop.add_signal_handler(signal.SIGINT, lambda: None)
        loop.add_signal_handler(signal.SIGHUP, lambda: None)
        await loop.connect_accepted_socket(lambda: self.pipe, sock=self.sock)
        if not await self._told_to_listen():
            return 0
        try:
            await asyncio.to_thread(self.journal.open)
            await self.remoted.start()
        except OSError as error:
            # One line, from the manager, for the operator: no traceback per worker here.
            self.pipe.send([(Tag.FAILED, self.index, str(error))])
            await self._close_pipe()
            return 1
        await self._serve()
        return 0

    async def _close_pipe(self) -> None:
        await asyncio.sleep(0)  # let the transport write the last batch
        if self.pipe.transport is not None:
            self.pipe.transport.close()
        await asyncio.sleep(0)

    async def _serve(self) -> None:
        self.pipe.send([(Tag.READY, self.index, self.remoted.port)])
        self.lag.start()
        tasks = [
            asyncio.create_task(self._housekeeping()),
            asyncio.create_task(self.journal.run()),
        ]
        if self.config.remote.manager_keepalive.enabled:
            tasks.append(asyncio.create_task(self.scheduler.run()))
        try:
            await self._stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.pushes.stop()
            self.lag.stop()
            await self.remoted.stop()
            self.journal.close()
            self.sink.flush()
            await self._close_pipe()

    async def _told_to_listen(self) -> bool:
        """Wait for the manager's LISTEN and the keys it names; False when told to stop (or the pipe
        closed) first. Keys and commands are handled meanwhile, nothing is bound."""
        listen = asyncio.create_task(self._may_listen.wait())
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait((listen, stop), return_when=asyncio.FIRST_COMPLETED)
        listen.cancel()
        stop.cancel()
        if self._may_listen.is_set() and not self._stop.is_set():
            return True
        if self.pipe.transport is not None:
            self.pipe.transport.close()
        return False

    async def _load_keys(self, generation: int, text: str) -> None:
        """The keys the manager accepted: connections on removed or changed keys go at once. Parsed off
        the loop (they are the manager's validated lines: indexed, not parsed again); of two reloads
        indexed at once, the newer one wins."""
        accepted = await asyncio.to_thread(AcceptedLines.index, text)
        if generation < self._keys_generation:
            return
        self._keys_generation = generation
        self.remoted.keys_changed(self.keys.take_accepted(accepted))
        self._added = [(after, lines) for after, lines in self._added if after >= generation]
        for _, lines in self._added:  # sent after these keys: not in them
            self.remoted.keys_changed(self.keys.apply_lines(lines))
        self.sink.flush()  # the disconnections first, then the acknowledgement
        self.pipe.send([(Tag.KEYS_LOADED, self.index, generation)])
        log.debug("remoted worker %d: %d keys loaded (generation %d)", self.index, len(self.keys), generation)
        self._check_listen()

    def _check_listen(self) -> None:
        if 0 <= self._listen_from <= self._keys_generation:
            self._may_listen.set()

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.remoted.housekeeping()
            self.pipe.send([(Tag.STATS, self.index, self.remoted.stats_snapshot())])
            transport = self.pipe.transport
            unsent = transport.get_write_buffer_size() if transport is not None else 0
            self.pipe.send([(Tag.LAG, self.index, self.lag.peak, time.monotonic(), unsent)])

    def _on_commands(self, commands: list[pipe.Record]) -> None:
        for command in commands:
            if command[0] is Command.STOP:
                self._stop.set()
            elif command[0] is Command.KEYS:
                _, generation, text = command
                self._keys_received = max(self._keys_received, generation)
                task = asyncio.create_task(self._load_keys(generation, text))
                self._keys_tasks.add(task)
                task.add_done_callback(self._keys_tasks.discard)
            elif command[0] is Command.SEND:
                _, agent_ids, payload = command
                for agent_id in agent_ids:
                    self.remoted.outbound.send_to_agent(agent_id, payload)
            elif command[0] is Command.VERDICT:
                _, request, verdict, highest = command
                self.replay.answered(request, verdict, highest)
            elif command[0] is Command.DROP:
                self.remoted.overtaken(command[1])
            elif command[0] is Command.PAUSE:
                self.remoted.pause(bool(command[1]))
            elif command[0] is Command.LISTEN:
                self._listen_from = max(self._listen_from, int(command[1]))
                self._check_listen()
            elif command[0] is Command.PUSH:
                _, agent_id, md5, path, quiet = command
                self.pushes.push(agent_id, md5, path, quiet=quiet)
            elif command[0] is Command.ADD_KEYS:
                _, token, lines, _before, _after = command
                self.remoted.keys_changed(self.keys.apply_lines(lines))
                self._added.append((self._keys_received, lines))
                self.pipe.send([(Tag.KEYS_ADDED, token)])

    def _pushed(self, agent_id: int, md5: str, ok: bool) -> None:
        self.pipe.send([(Tag.PUSHED, agent_id, md5, ok)])


def die_with_parent(manager_pid: int) -> None:
    """Ask the kernel to SIGKILL this process when the manager dies, however it dies (kill -9 included).

    SIGKILL, not SIGTERM: with the manager gone nothing a worker still holds can be committed, and the
    port must be free for the next manager at once. If the manager died before this call, exit now.
    Linux only (prctl); elsewhere the closed record pipe still stops the worker, more slowly.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"prctl(PR_SET_PDEATHSIG): {os.strerror(errno)}")
    if os.getppid() != manager_pid:
        os._exit(1)


def run_worker(home: Home, config: Config, index: int, fd: int) -> int:
    """The worker's main: 0 after a stop, 1 when it could not start."""
    import uvloop

    # The manager process is one and the workers are many: under CFS's equal shares a saturated machine
    # would give the store, the sweeper and the events a twelfth of what they need. Workers yield to it
    # (nice 5: weight 335 against its 1024), and so to every other process at nice 0 (`<worker_nice>`).
    if config.remote.worker_nice:
        os.nice(config.remote.worker_nice)
    sock = socket.socket(fileno=fd)
    with contextlib.suppress(KeyboardInterrupt):
        return uvloop.run(WorkerProcess(home, config, index, sock).run())
    return 0
