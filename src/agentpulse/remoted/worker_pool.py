"""The manager side of several remoted worker processes: start them, feed their records to the store and
the grace tracker, restart them. (`worker_process.py` is the other side: the main of one worker.)

Each worker is `python -m agentpulse worker --index I --fd N`, given one end of a socketpair. What it
sends is applied here exactly as an in-process remoted's calls would be: status updates to the store,
connection bindings to the grace tracker (with the worker as holder); a worker's question about a new
connection is answered from the `AdmissionBook` (admission.py). When a worker dies, every agent it
held has lost its connection: the grace tracker starts their grace, the worker is restarted, and agents
that reconnect (to any worker) in time never show disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import sys
import time
from dataclasses import dataclass, field

from agentpulse.records import RepeatSink
from agentpulse.remoted import pipe
from agentpulse.remoted.admission import AdmissionBook
from agentpulse.remoted.grace import GraceTracker
from agentpulse.remoted.pipe import Command, Tag

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0
STOP_TIMEOUT = 10.0
READY_TIMEOUT = 30.0


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


class WorkerPool:
    def __init__(
        self,
        home_root: str,
        count: int,
        store: RepeatSink,
        grace: GraceTracker,
        book: AdmissionBook,
        log_level: str = "info",
    ) -> None:
        self.home_root = home_root
        self.store = store
        self.grace = grace
        self.book = book
        self.log_level = log_level
        self.workers = [WorkerHandle(index) for index in range(1, count + 1)]
        self.stopping = False
        self._supervisors: list[asyncio.Task[None]] = []

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
        reader = pipe.PipeEnd(lambda batch: self._on_batch(worker, batch), worker.pipe_closed.set)
        await loop.connect_accepted_socket(lambda: reader, sock=ours)
        worker.reader = reader

    async def _supervise(self, worker: WorkerHandle) -> None:
        while True:
            assert worker.process is not None
            code = await worker.process.wait()
            if self.stopping:
                return
            lost = self.grace.holder_lost(worker.index)
            self.book.worker_lost(worker.index)
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
                self.book.bound(record[1], holder)
            elif tag is Tag.CLOSED:
                grace.closed(record[1], holder)
            elif tag is Tag.RELEASED:
                grace.released(record[1], holder)
            elif tag is Tag.HIGHEST:
                self.book.report(record[1])
            elif tag is Tag.ADMIT:
                self._admit(worker, record)
            elif tag is Tag.UNADMITTED:
                self.book.unadmitted(record[1], holder)
            elif tag is Tag.STATE:
                store.record_state(record[1], record[2])
            elif tag is Tag.COUNTS:
                store.count_events(record[1])
            elif tag is Tag.READY:
                worker.port = record[2]
                worker.ready.set()
                log.info(
                    "remoted worker %d ready (pid %s)", worker.index, worker.process and worker.process.pid
                )

    def _admit(self, worker: WorkerHandle, record: pipe.Record) -> None:
        """A worker asks whether a new connection may carry an agent (admission.py); a stale connection
        of it on another worker is closed when the new one is admitted."""
        _, request, agent_id, seq, startup, highest = record
        decision = self.book.decide(worker.index, agent_id, seq, startup, highest)
        if worker.reader is not None:
            worker.reader.send([(Command.VERDICT, request, decision.verdict.value, decision.highest)])
        for index in decision.overtaken:
            other = self.workers[index - 1] if 0 < index <= len(self.workers) else None
            if other is not None and other.reader is not None:
                other.reader.send([(Command.DROP, agent_id)])

    def send_to_agents(self, agent_ids: list[int], payload: bytes) -> None:
        """Every worker gets the list; only the one holding an agent's connection sends."""
        for worker in self.workers:
            if worker.reader is not None:
                worker.reader.send([(Command.SEND, agent_ids, payload)])

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
