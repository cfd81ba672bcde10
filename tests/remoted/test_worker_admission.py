"""The manager's answers to a worker's admission questions: one write per batch, in the order asked; "key in
use" only after the book was looked at again (another worker's close may not have been read yet)."""

from __future__ import annotations

import asyncio
from typing import Any

from agentpulse.remoted.pipe import Command, Record, Tag
from agentpulse.remoted.replay import ReplayBook
from agentpulse.remoted.worker_pool import KEY_IN_USE_RECHECK, KEY_IN_USE_RECHECKS, WorkerPool
from agentpulse.wire.counters import Verdict


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


def asked_while_held(agent_holders: dict[int, int]) -> tuple[WorkerPool, Written, Written]:
    """Two workers; worker 2 asks about a new connection of agent 5 (request 3) while the grace tracker's
    view, `agent_holders` (agent -> holders' bit mask, changed by the tests), has worker 1 holding it and
    its old connection talked just now (a live holder)."""
    store: Any = None
    grace: Any = None
    book = ReplayBook(lambda agent: agent_holders.get(agent, 0), 60.0, False)
    pool = WorkerPool("/nonexistent", 2, store, grace, book)
    first_end, second_end = Written(), Written()
    pool.workers[0].reader, pool.workers[1].reader = first_end, second_end  # type: ignore[assignment]
    pool.book.report({5: 10})
    pool._on_batch(pool.workers[1], [(Tag.ADMIT, 3, 5, 11, True, 0)])
    return pool, first_end, second_end


def verdicts(end: Written) -> list[tuple[int, str]]:
    return [(c[1], c[2]) for write in end.writes for c in write if c[0] is Command.VERDICT]


def test_key_in_use_is_judged_again_and_admitted_once_the_other_workers_close_is_read() -> None:
    """Agent 5's old connection on worker 1 closed, but the manager has not read that yet when worker 2
    asks about its new one: the question waits a recheck instead of being refused at once."""
    holders = {5: 1 << 1}  # worker 1 holds agent 5

    async def scenario() -> None:
        _, _, second_end = asked_while_held(holders)
        assert second_end.writes == []  # not refused yet
        holders[5] = 0  # worker 1's "closed" is read
        await asyncio.sleep(KEY_IN_USE_RECHECK * 1.5)
        assert verdicts(second_end) == [(3, Verdict.ADMIT.value)]

    asyncio.run(scenario())


def test_a_holder_that_stays_live_gets_key_in_use_after_the_rechecks() -> None:
    async def scenario() -> None:
        _, first_end, second_end = asked_while_held({5: 1 << 1})
        await asyncio.sleep(KEY_IN_USE_RECHECK * (KEY_IN_USE_RECHECKS - 0.5))
        assert second_end.writes == []
        await asyncio.sleep(KEY_IN_USE_RECHECK * 1.5)
        assert verdicts(second_end) == [(3, Verdict.KEY_IN_USE.value)]  # once, after the last look
        assert first_end.writes == []  # the live holder is not dropped

    asyncio.run(scenario())


def test_a_recheck_for_a_worker_that_was_replaced_is_not_answered() -> None:
    async def scenario() -> None:
        pool, _, second_end = asked_while_held({5: 1 << 1})
        replaced = Written()
        pool.workers[1].reader = replaced  # type: ignore[assignment]  # the worker died and was restarted
        await asyncio.sleep(KEY_IN_USE_RECHECK * (KEY_IN_USE_RECHECKS + 1))
        assert second_end.writes == [] and replaced.writes == []  # its request ids mean nothing now

    asyncio.run(scenario())
