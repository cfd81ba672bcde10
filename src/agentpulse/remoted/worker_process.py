"""The main of one remoted worker process: it holds agent connections on the shared port (SO_REUSEPORT)
and sends what happens to the manager through the record pipe. The manager owns the store, the grace
tracker, the sweeper, events and the query socket; a worker owns its own key store, sessions, replies and
the manager keep-alive of its agents. (`worker_pool.py` is the manager's side.)
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
from agentpulse.remoted.admission import PipeAdmission
from agentpulse.remoted.keystore import KeyStore
from agentpulse.remoted.keywatch import KeysWatcher
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
        self.admission = PipeAdmission(self.sink)
        self.remoted = Remoted(config, self.keys, self.sink, self.sink, admission=self.admission)
        self.scheduler = KeepaliveScheduler(self.remoted, config.remote.manager_keepalive)
        self.keys_watcher = KeysWatcher(
            home.client_keys, config.remote.keyupdate_interval, self._keys_changed
        )

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(lambda: self.pipe, sock=self.sock)
        self._keys_changed(await self.keys_watcher.load())
        await self.remoted.start()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.keys_watcher.trigger)
        # Ctrl-C reaches the whole process group: the manager decides, and tells the workers.
        loop.add_signal_handler(signal.SIGINT, lambda: None)
        self.pipe.send([(Tag.READY, self.index, self.remoted.tcp_port if self.remoted.servers else 0)])
        tasks = [asyncio.create_task(self.keys_watcher.run()), asyncio.create_task(self._housekeeping())]
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

    def _keys_changed(self, keys: KeysFile) -> None:
        self.remoted.keys_changed(self.keys.load(keys))

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.remoted.housekeeping()

    def _on_commands(self, commands: list[pipe.Record]) -> None:
        for command in commands:
            if command[0] is Command.STOP:
                self._stop.set()
            elif command[0] is Command.SEND:
                _, agent_ids, payload = command
                for agent_id in agent_ids:
                    self.remoted.send_to_agent(agent_id, payload)
            elif command[0] is Command.VERDICT:
                _, request, verdict, highest = command
                self.admission.answered(request, verdict, highest)
            elif command[0] is Command.DROP:
                self.remoted.overtaken(command[1])


def run_worker(home: Home, config: Config, index: int, fd: int) -> None:
    import uvloop

    # The manager process is one and the workers are many: under CFS's equal shares a saturated machine
    # would give the store, the sweeper and the events a twelfth of what they need. Workers yield to it.
    os.nice(WORKER_NICE)
    sock = socket.socket(fileno=fd)
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(WorkerProcess(home, config, index, sock).run())
