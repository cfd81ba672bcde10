"""The manager's answers to a worker's admission questions: one write per batch, in the order asked."""

from __future__ import annotations

from typing import Any

from agentpulse.remoted.pipe import Command, Record, Tag
from agentpulse.remoted.replay import ReplayBook
from agentpulse.remoted.worker_pool import WorkerPool


class Written:
    """A worker's end of the pipe as the manager writes to it: each `send` is one write."""

    def __init__(self) -> None:
        self.writes: list[list[Record]] = []

    def send(self, records: list[Record]) -> None:
        self.writes.append(records)


def test_a_batch_of_admission_questions_is_answered_in_one_write_in_order() -> None:
    store: Any = None  # ADMIT records touch neither the store nor the grace tracker
    grace: Any = None
    pool = WorkerPool("/nonexistent", 2, store, grace, ReplayBook(lambda agent: 0, 60.0, False))
    first, second = pool.workers
    first_end, second_end = Written(), Written()
    first.reader, second.reader = first_end, second_end  # type: ignore[assignment]
    questions = [(Tag.ADMIT, request, agent, 1, True, 0) for request, agent in ((7, 1), (8, 2), (9, 3))]
    pool._on_batch(first, questions)
    assert len(first_end.writes) == 1
    assert [(c[0], c[1]) for c in first_end.writes[0]] == [
        (Command.VERDICT, 7),
        (Command.VERDICT, 8),
        (Command.VERDICT, 9),
    ]
    assert second_end.writes == []
    pool._on_batch(first, [(Tag.LAG, 1, 0.0, 0.0, 0)])  # a batch without questions writes nothing
    assert len(first_end.writes) == 1
