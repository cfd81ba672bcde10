"""The manager's view of how far behind its workers are: their loop lag plus the record pipe's delay."""

from __future__ import annotations

import time
from typing import Any

from agentpulse.remoted.pipe import Tag
from agentpulse.remoted.replay import ReplayBook
from agentpulse.remoted.worker_pool import LAG_INTERVAL, WorkerPool


def _pool() -> WorkerPool:
    store: Any = None  # a LAG record touches neither the store nor the grace tracker
    grace: Any = None
    book = ReplayBook(lambda agent: 0, 60.0, False)
    pool = WorkerPool("/nonexistent", 2, store, grace, book)
    for worker in pool.workers:
        worker.ready.set()
    return pool


def test_behind_is_the_slowest_workers_loop_lag_plus_the_pipes_delay() -> None:
    pool = _pool()
    first, second = pool.workers
    assert pool.behind() == 0.0  # no report yet
    pool._on_batch(first, [(Tag.LAG, 1, 0.2, time.monotonic(), 0)])
    pool._on_batch(second, [(Tag.LAG, 2, 1.5, time.monotonic() - 2.0, 0)])  # sent 2 s ago: the pipe lags
    assert 3.4 < pool.behind() < 3.7


def test_reports_that_stop_coming_count_as_lag() -> None:
    pool = _pool()
    first, _ = pool.workers
    pool._on_batch(first, [(Tag.LAG, 1, 0.0, time.monotonic(), 0)])
    first.lag_at -= 6.0  # its last report arrived 6 s ago
    assert 6.0 - LAG_INTERVAL - 0.1 < pool.behind() < 6.0 - LAG_INTERVAL + 0.1
