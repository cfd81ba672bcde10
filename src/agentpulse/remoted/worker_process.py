"""The main of one remoted worker process: it holds agent connections on the shared port (SO_REUSEPORT)
and sends what happens to the manager through the record pipe. The manager owns the store, the grace
tracker, the sweeper, events and the query socket; a worker owns its own key store, sessions, replies and
the manager keep-alive of its agents. (`worker_pool.py` is the manager's side.)

Its keys come from the manager only (`Command.KEYS`, the lines the manager accepted): it never reads
client.keys, so it can neither accept a file the manager refused nor keep old keys after the manager took
new ones. It listens once it has its first keys; SIGHUP is the manager's business and is ignored here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket

from agentpulse.config import Config
from agentpulse.paths import Home
from agentpulse.remoted import pipe
from agentpulse.remoted.keystore import KeyStore
from agentpulse.remoted.pipe import Command, Tag
from agentpulse.remoted.scheduler import KeepaliveScheduler
from agentpulse.remoted.server import Remoted
from agentpulse.wire.keys import KeysFile

log = logging.getLogger(__name__)

WORKER_NICE = 5  # weight 335 against the manager's 1024


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
        self.remoted = Remoted(config, self.keys, self.sink, self.sink)
        self.scheduler = KeepaliveScheduler(self.remoted, config.remote.manager_keepalive)
        self._has_keys = asyncio.Event()
        self._keys_generation = -1  # of the keys in use
        self._keys_tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        # Ctrl-C and a hang-up reach the whole process group: the manager decides, and tells the workers.
        loop.add_signal_handler(signal.SIGINT, lambda: None)
        loop.add_signal_handler(signal.SIGHUP, lambda: None)
        await loop.connect_accepted_socket(lambda: self.pipe, sock=self.sock)
        if not await self._first_keys():
            return
        await self.remoted.start()
        self.pipe.send([(Tag.READY, self.index, self.remoted.tcp_port if self.remoted.servers else 0)])
        tasks = [asyncio.create_task(self._housekeeping())]
        if self.config.remote.manager_keepalive.enabled:
            tasks.append(asyncio.create_task(self.scheduler.run()))
        try:
            await self._stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.remoted.stop()
            self.sink.flush()
            await asyncio.sleep(0)  # let the transport write the last batch
            if self.pipe.transport is not None:
                self.pipe.transport.close()

    async def _first_keys(self) -> bool:
        """Wait for the manager's first KEYS command; False when told to stop (or the pipe closed) first."""
        keys = asyncio.create_task(self._has_keys.wait())
        stop = asyncio.create_task(self._stop.wait())
        await asyncio.wait((keys, stop), return_when=asyncio.FIRST_COMPLETED)
        keys.cancel()
        stop.cancel()
        if self._has_keys.is_set():
            return True
        if self.pipe.transport is not None:
            self.pipe.transport.close()
        return False

    async def _load_keys(self, generation: int, text: str) -> None:
        """The keys the manager accepted: connections on removed or changed keys go at once. Parsed off
        the loop (200,000 lines take a second); of two reloads parsed at once, the newer one wins."""
        keys = await asyncio.to_thread(KeysFile.parse, text)
        if generation < self._keys_generation:
            return
        self._keys_generation = generation
        self.remoted.keys_changed(self.keys.load(keys))
        self.sink.flush()  # the disconnections first, then the acknowledgement
        self.pipe.send([(Tag.KEYS_LOADED, self.index, generation)])
        self._has_keys.set()

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.remoted.flush_event_counts()

    def _on_commands(self, commands: list[pipe.Record]) -> None:
        for command in commands:
            if command[0] is Command.STOP:
                self._stop.set()
            elif command[0] is Command.KEYS:
                _, generation, text = command
                task = asyncio.create_task(self._load_keys(generation, text))
                self._keys_tasks.add(task)
                task.add_done_callback(self._keys_tasks.discard)
            elif command[0] is Command.SEND:
                _, agent_ids, payload = command
                for agent_id in agent_ids:
                    self.remoted.send_to_agent(agent_id, payload)


def run_worker(home: Home, config: Config, index: int, fd: int) -> None:
    import uvloop

    # The manager process is one and the workers are many: under CFS's equal shares a saturated machine
    # would give the store, the sweeper and the events a twelfth of what they need. Workers yield to it.
    os.nice(WORKER_NICE)
    sock = socket.socket(fileno=fd)
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(WorkerProcess(home, config, index, sock).run())
