"""The manager side of several remoted worker processes: start them, feed their records to the store and
the grace tracker, restart them. (`worker_process.py` is the other side: the main of one worker.)

Each worker is `python -m agentpulse worker --index I --fd N`, given one end of a socketpair. What it
sends is applied here exactly as an in-process remoted's calls would be: status updates to the store,
connection bindings to the grace tracker (with the worker as holder). When a worker dies, every agent it
held has lost its connection: the grace tracker starts their grace, the worker is restarted, and agents
that reconnect (to any worker) in time never show disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import sys
import time
from dataclasses import dataclass, field

from agentpulse.records import RepeatSink
from agentpulse.remoted import pipe
from agentpulse.remoted.grace import GraceTracker
from agentpulse.remoted.keywatch import Signature
from agentpulse.remoted.pipe import Command, Tag

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0
STOP_TIMEOUT = 10.0
READY_TIMEOUT = 30.0
ADD_KEYS_TIMEOUT = 5.0  # an enrolment waits this long at most for every worker to take its key


@dataclass
class WorkerHandle:
    index: int
    process: asyncio.subprocess.Process | None = None
    reader: pipe.PipeEnd | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    pipe_closed: asyncio.Event = field(default_factory=asyncio.Event)
    decoder: pipe.UpdateDecoder = field(default_factory=pipe.UpdateDecoder)
    port: int = 0
    restarts: int = 0
    acks: dict[int, asyncio.Future[bool]] = field(default_factory=dict)  # ADD_KEYS token -> answered


class WorkerPool:
    def __init__(
        self, home_root: str, count: int, store: RepeatSink, grace: GraceTracker, log_level: str = "info"
    ) -> None:
        self.home_root = home_root
        self.store = store
        self.grace = grace
        self.log_level = log_level
        self.workers = [WorkerHandle(index) for index in range(1, count + 1)]
        self.stopping = False
        self._supervisors: list[asyncio.Task[None]] = []
        self._tokens = itertools.count(1)

    async def start(self) -> None:
        for worker in self.workers:
            await self._spawn(worker)
        await asyncio.wait_for(asyncio.gather(*(w.ready.wait() for w in self.workers)), READY_TIMEOUT)
        self._supervisors = [asyncio.create_task(self._supervise(worker)) for worker in self.workers]

    @property
    def tcp_port(self) -> int:
        return self.workers[0].port

    async def _spawn(self, worker: WorkerHandle) -> None:
        ours, theirs = socket.socketpair()
        worker.ready.clear()
        worker.pipe_closed.clear()
        worker.decoder = pipe.UpdateDecoder()  # a new process sends every keep-alive in full first
        try:
            worker.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "agentpulse",
                "worker",
                "--home",
                self.home_root,
                "--index",
                str(worker.index),
                "--fd",
                str(theirs.fileno()),
                "--log-level",
                self.log_level,
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        loop = asyncio.get_running_loop()
        reader = pipe.PipeEnd(lambda batch: self._on_batch(worker, batch), lambda: self._pipe_lost(worker))
        await loop.connect_accepted_socket(lambda: reader, sock=ours)
        worker.reader = reader

    def _pipe_lost(self, worker: WorkerHandle) -> None:
        worker.pipe_closed.set()
        for future in worker.acks.values():  # a new process reads client.keys itself
            if not future.done():
                future.set_result(False)
        worker.acks.clear()

    async def _supervise(self, worker: WorkerHandle) -> None:
        while True:
            assert worker.process is not None
            code = await worker.process.wait()
            if self.stopping:
                return
            lost = self.grace.holder_lost(worker.index)
            log.error(
                "remoted worker %d exited with %s; %d agents lost their connection; restarting",
                worker.index,
                code,
                len(lost),
            )
            worker.restarts += 1
            await asyncio.sleep(RESTART_DELAY)
            if self.stopping:
                return
            await self._spawn(worker)

    def _on_batch(self, worker: WorkerHandle, records: list[pipe.Record]) -> None:
        store, grace, holder, decode = self.store, self.grace, worker.index, worker.decoder
        for record in records:
            tag = record[0]
            if tag is Tag.REPEATS:
                store.submit_repeats(record[1], record[2], decode.last)
            elif tag is Tag.UPDATE:
                store.submit(decode(record))
            elif tag is Tag.BOUND:
                grace.bound(record[1], holder)
            elif tag is Tag.CLOSED:
                grace.closed(record[1], holder)
            elif tag is Tag.RELEASED:
                grace.released(record[1], holder)
            elif tag is Tag.STATE:
                store.record_state(record[1], record[2])
            elif tag is Tag.COUNTS:
                store.count_events(record[1])
            elif tag is Tag.KEYS_ADDED:
                future = worker.acks.pop(record[1], None)
                if future is not None and not future.done():
                    future.set_result(True)
            elif tag is Tag.READY:
                worker.port = record[2]
                worker.ready.set()
                log.info(
                    "remoted worker %d ready (pid %s)", worker.index, worker.process and worker.process.pid
                )

    def send_to_agents(self, agent_ids: list[int], payload: bytes) -> None:
        """Every worker gets the list; only the one holding an agent's connection sends."""
        for worker in self.workers:
            if worker.reader is not None:
                worker.reader.send([(Command.SEND, agent_ids, payload)])

    async def add_keys(
        self, lines: list[str], before: Signature, after: Signature, timeout: float = ADD_KEYS_TIMEOUT
    ) -> bool:
        """Every worker takes these client.keys lines (enrolment's new and replaced agents); returns once
        all have answered, or False after `timeout` (a late worker still gets them, or reads the file)."""
        token = next(self._tokens)
        loop = asyncio.get_running_loop()
        waits: list[asyncio.Future[bool]] = []
        for worker in self.workers:
            if worker.reader is None or worker.pipe_closed.is_set():
                continue
            future: asyncio.Future[bool] = loop.create_future()
            worker.acks[token] = future
            worker.reader.send([(Command.ADD_KEYS, token, lines, before, after)])
            waits.append(future)
        if not waits:
            return True
        _, late = await asyncio.wait(waits, timeout=timeout)
        for worker in self.workers:
            worker.acks.pop(token, None)
        if late:
            log.warning(
                "%d remoted workers did not take %d new keys within %g s", len(late), len(lines), timeout
            )
        return not late and all(future.result() for future in waits)

    async def stop(self) -> None:
        self.stopping = True
        for worker in self.workers:
            if worker.reader is not None:
                worker.reader.send([(Command.STOP,)])
        deadline = time.monotonic() + STOP_TIMEOUT
        for worker in self.workers:
            process = worker.process
            if process is None:
                continue
            try:
                await asyncio.wait_for(process.wait(), max(0.1, deadline - time.monotonic()))
                # Its last batch is still in the pipe: read it to the end before the store closes.
                await asyncio.wait_for(worker.pipe_closed.wait(), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                log.warning("remoted worker %d did not stop in time; killing it", worker.index)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        for task in self._supervisors:
            task.cancel()
        await asyncio.gather(*self._supervisors, return_exceptions=True)
