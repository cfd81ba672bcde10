"""The writer thread: the one writer of the database. It swaps the pending batch out and commits it.

`BatchWriter` keeps the database off the event loop and makes thousands of keep-alives cost one commit.
The danger is losing what was accepted: a failed commit is put back under what arrived since and retried,
so a full disk or a stopped PostgreSQL does not drop status changes. While the database is away the held
history and outbox rows are bounded (`max_pending`): past it the oldest are dropped, counted and logged, but
each agent's current status (one entry per agent) is always kept (those drops are logged at most every
10 s). One warning when writes start failing, one line when they work again, with what was held.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from agentpulse.ratelimit import RateLimitedLog
from agentpulse.store.backend import Backend, WriteFailed
from agentpulse.store.batch import Batch
from agentpulse.store.view import Adopted

log = logging.getLogger(__name__)

STOP_RETRIES = 5
DEFAULT_MAX_PENDING = 1_000_000  # history + outbox rows held while the database cannot be written
T = TypeVar("T")
Job = Callable[[Backend], Any]
# Told of each batch committed, on the writer thread: (the batch, seconds its write took, when it ended)
FlushObserver = Callable[[Batch, float, float], None]


class StoreClosed(RuntimeError):
    def __init__(self) -> None:
        super().__init__("the store is closed")


class BatchWriter:
    """The pending batch and the thread that commits it.

    Callers add to `batch` under `lock` (a dict update on the event loop); the thread writes it through the
    backend in one transaction at least every `flush_interval` seconds. Jobs (vacuum) run on this thread
    right after the batch that was pending when they were queued, so they see everything accepted before
    them. Per-agent databases are created on a second thread: 5,000 first startups must not hold every
    status write back.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        flush_interval: float,
        clock: Callable[[], float],
        max_pending: int = DEFAULT_MAX_PENDING,
        known: Callable[[int], bool],
        committed: Callable[[Batch], None],
    ) -> None:
        self.backend = backend
        self.flush_interval = flush_interval
        self.clock = clock
        self._known = known  # is this agent still there (its database is not made for a removed one)
        self._committed = committed  # told what was committed, on this thread, outside the lock
        self.lock = threading.Lock()
        self.batch = Batch()  # what is accepted and not yet written: add to it under `lock`
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._waiters: list[Callable[[], None]] = []  # called once what was accepted before is committed
        self._jobs: list[tuple[Job, Future[Any]]] = []
        self._closed = False
        self.flushes = 0
        self.write_errors = 0
        # Batches are numbered as they are swapped out; `settled` is the number of the last one committed
        # (with everything before it): what a database read started after looking at it sees.
        self.swapped = 0
        self.settled = 0
        self.on_flush: FlushObserver | None = None  # metrics: flush duration, batch size, lag
        self.max_pending = max_pending
        self.dropped = 0  # history/outbox rows dropped past max_pending during an outage
        self._failing_since: float | None = None  # monotonic time of the first failure of an outage
        self._dropped_since_failing = 0
        self._drops_log = RateLimitedLog(log)
        # What the backend's commits found of agents another node took (`Store.apply_adopted`).
        self.adopted: list[Adopted] = []
        self._agent_dbs: queue.SimpleQueue[int | Callable[[], object] | None] = queue.SimpleQueue()
        self._agent_db_thread: threading.Thread | None = None

    def start(self, opening: Callable[[], None]) -> None:
        """Run `opening` (connect, load) on the writer thread, then its loop; re-raise what opening raised."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                opening()
            except BaseException as exc:
                failure.append(exc)
                return
            finally:
                ready.set()
            self._run()

        self._thread = threading.Thread(target=run, name="store-writer", daemon=True)
        self._thread.start()
        self._agent_db_thread = threading.Thread(
            target=self._create_agent_dbs, name="store-agent-dbs", daemon=True
        )
        self._agent_db_thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]

    def close(self) -> None:
        """Write everything accepted so far, then stop both threads."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._agent_db_thread is not None:
            self._agent_dbs.put(None)
            self._agent_db_thread.join()
            self._agent_db_thread = None
        with self.lock:
            self._closed = True
            jobs, self._jobs = self._jobs, []
        for _, future in jobs:
            if future.set_running_or_notify_cancel():
                future.set_exception(StoreClosed())

    @property
    def filling(self) -> int:
        """The number the batch being filled now will have (read under `lock`)."""
        return self.swapped + 1

    def wake(self) -> None:
        self._wake.set()

    def when_committed(self, callback: Callable[[], None]) -> bool:
        """Call `callback` once everything accepted before now is committed; False if the store is closed."""
        with self.lock:
            if self._closed:
                return False
            self._waiters.append(callback)
        self._wake.set()
        return True

    def flush_wait(self, timeout: float = 30.0) -> bool:
        done = threading.Event()
        with self.lock:
            self._waiters.append(done.set)
        self._wake.set()
        return done.wait(timeout)

    def run_job(self, job: Callable[[Backend], T]) -> Future[T]:
        """Run `job(backend)` on the writer thread, after the batch pending now is committed."""
        future: Future[T] = Future()
        with self.lock:
            if self._closed:
                future.set_exception(StoreClosed())
                return future
            self._jobs.append((job, future))
        self._wake.set()
        return future

    def _run(self) -> None:
        while True:
            stopping = self._stop.is_set()
            try:
                self._flush()
            except WriteFailed as error:
                self.write_errors += 1
                self._failed(error)
                if stopping and self.write_errors > STOP_RETRIES:
                    log.error("giving up on the last batch at shutdown after %d failures", STOP_RETRIES)
                    break
            if stopping and not self.batch:
                break
            self._wake.wait(self.flush_interval)
            self._wake.clear()
        self.backend.close()

    def _flush(self) -> None:
        """Commit the pending batch; on failure put it back under what arrived since, and re-raise."""
        with self.lock:
            batch, self.batch = self.batch, Batch()
            waiters, self._waiters = self._waiters, []
            jobs, self._jobs = self._jobs, []
            self.swapped += 1
            number = self.swapped
        try:
            self._write(batch)
        except BaseException:
            with self.lock:
                # Its contents commit with the batch being filled now (a higher number), never alone.
                self.batch = batch.requeue_under(self.batch)
                self._waiters[:0] = waiters
                self._jobs[:0] = jobs
            raise
        self.settled = number
        if batch.agent_dbs and self._agent_db_thread is not None:
            # Those waiting for this commit also wait for the databases it asked for: the creation
            # thread calls them after it has made them.
            self._agent_dbs.put(lambda: [waiter() for waiter in waiters])
        else:
            for waiter in waiters:
                waiter()
        if batch:
            self._committed(batch)
        for job, future in jobs:
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job(self.backend))
            except BaseException as exc:
                future.set_exception(exc)

    def _failed(self, error: WriteFailed) -> None:
        """Log the start of an outage once (later failures at debug level), and keep the held rows bounded."""
        with self.lock:
            held = len(self.batch.history) + len(self.batch.outbox)
            dropped = self.batch.drop_oldest(self.max_pending) if held > self.max_pending else 0
            held -= dropped
        self.dropped += dropped
        self._dropped_since_failing += dropped
        if dropped:
            self._drops_log.error(
                "max-pending",
                "database still unavailable: dropped the %d oldest history/outbox rows to stay within "
                "max_pending %d (current statuses are kept; %d dropped in all)",
                dropped,
                self.max_pending,
                self.dropped,
            )
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            log.warning(
                "database write failed, holding status changes in memory and retrying every %.1f s "
                "(at most %d history/outbox rows): %s",
                self.flush_interval,
                self.max_pending,
                error,
            )
        else:
            log.debug("database write failed again (%d rows held): %s", held, error)

    def _write(self, batch: Batch) -> None:
        if not batch:
            # Several nodes: an idle node still commits its flush mark (PostgreSQL's node_flush), which
            # tells the others that it holds no binding it has not written (`cluster/losses.py`).
            if self.backend.wants_idle_flush():
                self.backend.write(batch, self.clock())
            return
        started = time.perf_counter()
        self.backend.write(batch, self.clock())
        adopted = self.backend.take_adopted()
        if adopted:
            with self.lock:
                self.adopted.extend(adopted)
        if self.on_flush is not None:
            try:
                self.on_flush(batch, time.perf_counter() - started, self.clock())
            except Exception:  # the batch is committed: a broken observer must not have it written again
                log.exception("flush observer failed")
        if self._failing_since is not None:
            log.warning(
                "database writes work again after %.1f s: wrote the %d status changes, %d status events and "
                "%d keep-alives held meanwhile%s",
                time.monotonic() - self._failing_since,
                len(batch.history),
                len(batch.outbox),
                len(batch.keepalives),
                f" ({self._dropped_since_failing} older history/outbox rows were dropped at max_pending)"
                if self._dropped_since_failing
                else "",
            )
            self._failing_since = None
            self._dropped_since_failing = 0
        for agent_id, purge in batch.deleted.items():
            if purge:
                self.backend.remove_agent_files(agent_id)
        for agent_id in batch.agent_dbs:
            self._agent_dbs.put(agent_id)
        self.flushes += 1

    def _create_agent_dbs(self) -> None:
        self.backend.prepare_agent_dbs()
        while (item := self._agent_dbs.get()) is not None:
            if callable(item):
                item()
            elif self._known(item):  # not removed since its first startup
                self.backend.create_agent_db(item)
