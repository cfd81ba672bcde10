"""A remoted's counters as the pipe carries them, and a worker slot's totals across restarts."""

from __future__ import annotations

import pickle

from agentpulse.remoted.stats import RemotedStats, WorkerStats, WorkerTotals, snapshot
from agentpulse.wire import control
from agentpulse.wire.errors import Reason


def test_a_snapshot_names_message_kinds_and_refusal_reasons() -> None:
    stats = RemotedStats()
    stats.messages[control.Keepalive] += 5
    stats.messages[control.OtherControl] += 1
    stats.messages["ping"] += 2
    stats.refusals[Reason.BAD_HEADER] += 1
    stats.replies_dropped = 3
    shot = snapshot(stats, 7, admission_refused=2, admission_timed_out=1, unexpected=4)
    assert shot == WorkerStats(
        7,
        {"keepalive": 5, "other": 1, "ping": 2},
        {"bad_header": 1, "connection_limit": 2, "frame_timeout": 1, "unexpected_error": 4},
        3,
    )
    assert shot.keepalives == 5
    assert pickle.loads(pickle.dumps(shot)) == shot  # it crosses the record pipe


def test_a_restarted_worker_keeps_counting_from_where_its_predecessor_stopped() -> None:
    totals = WorkerTotals()
    totals.update(WorkerStats(10, {"keepalive": 100}, {"wrong_key": 1}, 2))
    totals.restarted()
    assert totals.total == WorkerStats(0, {"keepalive": 100}, {"wrong_key": 1}, 2)
    totals.update(WorkerStats(4, {"keepalive": 7, "startup": 4}, {}, 0))
    assert totals.total == WorkerStats(4, {"keepalive": 107, "startup": 4}, {"wrong_key": 1}, 2)
