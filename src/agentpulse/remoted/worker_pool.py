"""The manager side of several remoted worker processes: start them, feed their records to the store and
the grace tracker, restart them. (`worker_process.py` is the other side: the main of one worker.)

The danger is a dying worker: every agent it held has lost its connection, and the grace tracker must
learn so before the worker is restarted (see `WorkerPool._supervise`). Workers never read client.keys: the
manager sends each the accepted lines (`Command.KEYS`). Start is in two steps: `spawn()` starts the
processes, which load their keys while the manager's store resets the last run's agents, and `listen()`,
once that reset is committed, lets them bind the port and take agents (`Command.LISTEN`); no agent is
served before the reset is in the database. All or nothing (`WorkerStartError`).
A worker's question about a new connection of an agent is answered from the `ReplayBook` (replay.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agentpulse.records import RepeatSink
from agentpulse.remoted import pipe
from agentpulse.remoted.grace import GraceTracker
from agentpulse.remoted.keywatch import Signature
from agentpulse.remoted.pipe import Command, Tag
from agentpulse.remoted.replay import ReplayBook
from agentpulse.remoted.stats import WorkerTotals
from agentpulse.wire.counters import Verdict

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0
# For every worker to stop: each bounds its own stop (remoted.server.STOP_GRACE, twice, for connections
# that do not drain), then the manager reads its last records.
STOP_TIMEOUT = 20.0
READY_TIMEOUT = 30.0
ADD_KEYS_TIMEOUT = 5.0  # an enrolment waits this long at most for every worker to take its key
FAILURE_READ_TIMEOUT = 1.0  # after a worker exited at start: time to read the reason it sent
LAG_INTERVAL = 1.0  # a worker reports its lag this often (worker_process._housekeeping)
# A new connection of an agent that another worker holds is judged again this often, so many times, before
# its "key in use": an agent that restarts at once (its shutdown, its close, its new connection within
# milliseconds) may reach another worker before the manager has read from the first that it closed (two
# pipes, no order between them). The rule is the same each time (replay.py); only the book is fresher.
# In all under the lag guard's RESUME_LAG (0.5 s), which the oldest unanswered question counts toward.
KEY_IN_USE_RECHECK = 0.2
KEY_IN_USE_RECHECKS = 2


class WorkerStartError(RuntimeError):
    """A worker could not start (a port it cannot bind, a bad home): the manager does not start."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"remoted worker {index}: {reason}")
        self.index = index
        self.reason = reason


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
    keys_generation: int = 0  # the last KEYS command this process said it applied
    failure: str | None = None  # why it could not start, as it said before exiting
    stats: WorkerTotals = field(default_factory=WorkerTotals)  # its counters, from its Tag.STATS
    lag: float = 0.0  # its loop's recent peak lag plus the record pipe's delay, as of lag_at
    lag_at: float = 0.0  # monotonic time its last lag report arrived; 0: none yet


class WorkerPool:
    def __init__(
        self,
        home_root: str,
        count: int,
        store: RepeatSink,
        grace: GraceTracker,
        book: ReplayBook,
        log_level: str = "info",
    ) -> None:
        self.home_root = home_root
        self.store = store
        self.grace = grace
        self.book = book
        self.log_level = log_level
        self.workers = [WorkerHandle(index) for index in range(1, count + 1)]
        self.stopping = False
        self.listening = False  # told to listen: a worker (re)started from now on listens at once
        self.stopped = False
        self._supervisors: list[asyncio.Task[None]] = []
        self._tokens = itertools.count(1)
        self.keys_text = ""  # the lines of client.keys the manager accepted last
        self.added_lines: list[str] = []  # enrolment's lines since: not in keys_text
        self.keys_generation = 0
        self._keys_acked = asyncio.Event()  # set on every KEYS_LOADED (and lost worker): waiters look again
        self.on_pushed: Callable[[int, str, bool], None] | None = None  # how each push() ended
        self.paused = False  # several nodes: the node has no lease; a worker started now starts paused

    async def start(self) -> None:
        """`spawn()` then `listen()`: every worker started and listening."""
        await self.spawn()
        await self.listen()

    async def spawn(self) -> None:
        """Start every worker process and send it its keys; none listens until `listen()`. Failed or
        cancelled, it stops those it started before it returns."""
        try:
            for worker in self.workers:
                if worker.process is None:
                    await self._spawn(worker)
        except BaseException:
            await self.stop()
            raise

    async def listen(self) -> None:
        """Let every worker listen (spawning those not started yet) and wait until each does. Raises
        WorkerStartError when one cannot; cancelled or failed, it stops every worker before it returns."""
        try:
            await self.spawn()
            self.listening = True
            for worker in self.workers:
                assert worker.reader is not None
                worker.reader.send([(Command.LISTEN, self.keys_generation)])
            deadline = time.monotonic() + READY_TIMEOUT
            for worker in self.workers:
                await self._wait_ready(worker, deadline)
        except BaseException:
            await self.stop()
            raise
        self._supervisors = [asyncio.create_task(self._supervise(worker)) for worker in self.workers]

    async def _wait_ready(self, worker: WorkerHandle, deadline: float) -> None:
        process = worker.process
        assert process is not None
        ready = asyncio.ensure_future(worker.ready.wait())
        exited = asyncio.ensure_future(process.wait())
        try:
            await asyncio.wait(
                (ready, exited),
                timeout=max(0.0, deadline - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            ready.cancel()
            exited.cancel()
        if worker.ready.is_set():
            return
        if process.returncode is None:
            raise WorkerStartError(worker.index, f"not listening after {READY_TIMEOUT:.0f} s")
        with contextlib.suppress(TimeoutError):  # its last words are still in the pipe
            await asyncio.wait_for(worker.pipe_closed.wait(), FAILURE_READ_TIMEOUT)
        raise WorkerStartError(worker.index, worker.failure or f"exited with status {process.returncode}")

    @property
    def port(self) -> int:
        """The port the workers listen on (TCP and UDP share it)."""
        return self.workers[0].port

    async def _spawn(self, worker: WorkerHandle) -> None:
        """Start `python -m agentpulse worker --index I --fd N`, given one end of a socketpair."""
        ours, theirs = socket.socketpair()
        worker.ready.clear()
        worker.pipe_closed.clear()
        worker.failure = None
        worker.decoder = pipe.UpdateDecoder()  # a new process sends every keep-alive in full first
        worker.keys_generation = 0
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
                "--manager-pid",
                str(os.getpid()),
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
        if self.paused:
            # Before its keys: it listens once it has them and is told to, and must then take no agent.
            reader.send([(Command.PAUSE, True)])
        # Its keys before anything else: it listens only once it has them, and only once told to.
        reader.send([(Command.KEYS, self.keys_generation, self.keys_text)])
        if self.added_lines:  # token 0: nobody waits for this answer
            reader.send([(Command.ADD_KEYS, 0, self.added_lines, None, None)])
        if self.listening:  # a restart: the store's reset is long committed
            reader.send([(Command.LISTEN, self.keys_generation)])

    def _pipe_lost(self, worker: WorkerHandle) -> None:
        worker.pipe_closed.set()
        worker.ready.clear()  # whatever it acknowledged, it holds no keys now; its restart gets them
        self._keys_acked.set()
        for future in worker.acks.values():  # its restart gets those lines with its first keys
            if not future.done():
                future.set_result(False)
        worker.acks.clear()

    async def _supervise(self, worker: WorkerHandle) -> None:
        """Restart the worker whenever it exits, unless the pool is stopping.

        When a worker dies, every agent it held has lost its connection: the grace tracker starts their
        grace, the worker is restarted, and agents that reconnect (to any worker) in time never show
        disconnected.
        """
        while True:
            assert worker.process is not None
            code = await worker.process.wait()
            if self.stopping:
                return
            lost = self.grace.holder_lost(worker.index)
            self.book.worker_lost(worker.index)
            log.error(
                "remoted worker %d exited with %s%s; %d agents lost their connection; restarting",
                worker.index,
                code,
                f" ({worker.failure})" if worker.failure else "",
                len(lost),
            )
            worker.restarts += 1
            worker.stats.restarted()
            await asyncio.sleep(RESTART_DELAY)
            if self.stopping:
                return
            await self._spawn(worker)

    def _on_batch(self, worker: WorkerHandle, records: list[pipe.Record]) -> None:
        """Apply what a worker sent exactly as an in-process remoted's calls would be: status updates to
        the store, connection bindings to the grace tracker (with the worker as holder)."""
        store, grace, holder, decode = self.store, self.grace, worker.index, worker.decoder
        answers: dict[int, list[pipe.Record]] = {}  # worker index -> its verdicts and drops, sent once
        try:
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
                    self._admit(worker, record, answers)
                elif tag is Tag.UNADMITTED:
                    self.book.unadmitted(record[1], holder)
                elif tag is Tag.STATE:
                    store.record_state(record[1], record[2])
                elif tag is Tag.COUNTS:
                    store.count_events(record[1])
                else:
                    self._on_worker_message(worker, record)
        finally:  # what was decided is told, even if a later record fails
            self._send_answers(answers)

    def _send_answers(self, answers: dict[int, list[pipe.Record]]) -> None:
        for index, commands in answers.items():
            reader = self.workers[index - 1].reader if 0 < index <= len(self.workers) else None
            if reader is not None:
                reader.send(commands)

    def _on_worker_message(self, worker: WorkerHandle, record: pipe.Record) -> None:
        """The rarer records: answers to commands, and the worker's own life cycle."""
        tag = record[0]
        if tag is Tag.KEYS_ADDED:
            future = worker.acks.pop(record[1], None)
            if future is not None and not future.done():
                future.set_result(True)
        elif tag is Tag.KEYS_LOADED:
            worker.keys_generation = record[2]
            self._keys_acked.set()
        elif tag is Tag.STATS:
            worker.stats.update(record[2])
        elif tag is Tag.LAG:
            now = time.monotonic()
            worker.lag, worker.lag_at = record[2] + max(0.0, now - record[3]), now
        elif tag is Tag.PUSHED:
            if self.on_pushed is not None:
                self.on_pushed(record[1], record[2], record[3])
        elif tag is Tag.FAILED:
            worker.failure = str(record[2])
        elif tag is Tag.READY:
            worker.port = record[2]
            worker.ready.set()
            log.info("remoted worker %d ready (pid %s)", worker.index, worker.process and worker.process.pid)

    def _admit(
        self,
        worker: WorkerHandle,
        record: pipe.Record,
        answers: dict[int, list[pipe.Record]],
        tries: int = 0,
    ) -> None:
        """A worker asks whether a new connection may carry an agent (replay.py); a stale connection
        of it on another worker is closed when the new one is admitted. The commands go to `answers`,
        by worker: one write each for the whole batch, in order. "Key in use" is answered only after
        `KEY_IN_USE_RECHECKS` looks, `KEY_IN_USE_RECHECK` apart (see there)."""
        _, request, agent_id, seq, startup, highest = record
        decision = self.book.decide(worker.index, agent_id, seq, startup, highest)
        if decision.verdict is Verdict.KEY_IN_USE and tries < KEY_IN_USE_RECHECKS:
            asyncio.get_running_loop().call_later(
                KEY_IN_USE_RECHECK, self._admit_again, worker, worker.reader, record, tries + 1
            )
            return
        answers.setdefault(worker.index, []).append(
            (Command.VERDICT, request, decision.verdict.value, decision.highest)
        )
        for index in decision.overtaken:
            if 0 < index <= len(self.workers):
                answers.setdefault(index, []).append((Command.DROP, agent_id))

    def _admit_again(
        self, worker: WorkerHandle, reader: pipe.PipeEnd | None, record: pipe.Record, tries: int
    ) -> None:
        if reader is None or worker.reader is not reader:  # that worker process is gone: so is its question
            return
        answers: dict[int, list[pipe.Record]] = {}
        self._admit(worker, record, answers, tries)
        self._send_answers(answers)

    def drop(self, agent_id: int, holders: list[int]) -> None:
        """Close the agent's connection on these workers (let go: no grace), as an overtake does."""
        for index in holders:
            worker = self.workers[index - 1] if 0 < index <= len(self.workers) else None
            if worker is not None and worker.reader is not None:
                worker.reader.send([(Command.DROP, agent_id)])

    def pause(self, paused: bool) -> None:
        """Several nodes: every worker closes its connections and takes none (True), or takes them again;
        a worker restarted meanwhile starts so too."""
        self.paused = paused
        for worker in self.workers:
            if worker.reader is not None:
                worker.reader.send([(Command.PAUSE, paused)])

    def behind(self) -> float:
        """Seconds the slowest worker is behind: its loop's lag plus the pipe's delay, or, when its
        reports stopped coming (a loop or a pipe stuck), how long they have been missing."""
        now = time.monotonic()
        worst = 0.0
        for worker in self.workers:
            if worker.lag_at and worker.ready.is_set():
                worst = max(worst, worker.lag, now - worker.lag_at - LAG_INTERVAL)
        return worst

    def load_keys(self, text: str) -> None:
        """The keys the manager accepted: to every worker now, and to every worker started later."""
        self.keys_generation += 1
        self.keys_text = text  # the key store's lines, enrolment's included: none is added on top now
        self.added_lines = []
        for worker in self.workers:
            if worker.reader is not None:
                worker.reader.send([(Command.KEYS, self.keys_generation, text)])

    async def keys_applied(self, timeout: float) -> bool:
        """Wait until every running worker uses the keys of the last `load_keys`; False after `timeout`."""
        deadline = time.monotonic() + timeout
        generation = self.keys_generation
        while any(w.ready.is_set() and w.keys_generation < generation for w in self.workers):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._keys_acked.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._keys_acked.wait(), remaining)
        return True

    def send_to_agents(self, agent_ids: list[int], payload: bytes) -> None:
        """Every worker gets the list; only the one holding an agent's connection sends."""
        for worker in self.workers:
            if worker.reader is not None:
                worker.reader.send([(Command.SEND, agent_ids, payload)])

    def push(self, holder: int | None, agent_id: int, md5: str, path: str) -> bool:
        """Ask the worker `holder` (its index) to push merged.mg to the agent; False when it is not running.
        None: every worker is asked, and only the one holding the agent answers (UDP agents: the grace
        tracker knows TCP connections only)."""
        asked = False
        for worker in self.workers:
            if holder is not None and worker.index != holder:
                continue
            if worker.reader is not None and not worker.pipe_closed.is_set():
                worker.reader.send([(Command.PUSH, agent_id, md5, path, holder is None)])
                asked = True
        return asked

    async def add_keys(
        self, lines: list[str], before: Signature, after: Signature, timeout: float = ADD_KEYS_TIMEOUT
    ) -> bool:
        """Every worker takes these client.keys lines (enrolment's new and replaced agents); returns once
        all have answered, or False after `timeout` (a late worker still gets them; a restarted one with its first keys)."""
        token = next(self._tokens)
        self.added_lines.extend(lines)  # for a worker (re)started before the next load_keys
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
        """Stop every worker and read its last records; a second call does nothing."""
        if self.stopped:
            return
        self.stopped = True
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
