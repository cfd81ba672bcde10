"""`LoopBudget`: agent events may take at most `BUDGET` seconds of one loop iteration; keep-alives wait for none.

A loop iteration reads every socket that is ready, and an agent's socket read may hold hundreds of events.
While the manager keeps up this costs nothing; once the events offered exceed what one core handles, the
iterations grow to hundreds of milliseconds and every keep-alive read in them is acknowledged that late,
including those of agents that send nothing else. The spool back-pressure (intake.py) does not help: it
sees NATS and the disk, not the loop.

So the intake notes when an iteration's first event was accepted (`start`), and once events have taken
more than `BUDGET` of it, the connection whose event crosses it is paused (its frames already read wait
in memory, the rest in the kernel and then in the agent's `client_buffer`). The paused connections wait in
arrival order, and each later iteration resumes them in that order for at most `BUDGET` more (`due`), so
event throughput stays near what the core can do while an iteration ends within about twice the budget
plus its keep-alives. An agent that sends only keep-alives is never paused: only an event can pause.

Pure bookkeeping on the times it is given: the intake does the pausing and resuming.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Final, Generic, TypeVar

BUDGET: Final = 0.01  # seconds of one loop iteration that agent events may take

T = TypeVar("T", bound=Hashable)


class LoopBudget(Generic[T]):
    """Which connections are paused to keep an iteration's events within the budget, in arrival order."""

    def __init__(self, budget: float = BUDGET) -> None:
        self.budget = budget
        self.started = -1.0  # when this iteration's first event was accepted; -1: none yet
        self._waiting: OrderedDict[T, None] = OrderedDict()
        self.pauses = 0  # over the run, for `agentpulse status`

    def start(self, now: float) -> None:
        """The first event of an iteration (or a resume round) is being handled."""
        self.started = now

    def end(self) -> None:
        """The iteration's events are all handled (its flush)."""
        self.started = -1.0

    def over(self, now: float) -> bool:
        """True once this iteration's events have taken more than the budget."""
        return self.started >= 0 and now - self.started > self.budget

    def wait(self, who: T) -> bool:
        """`who` crossed the budget: it waits for a later iteration. False when it waits already."""
        if who in self._waiting:
            return False
        self._waiting[who] = None
        self.pauses += 1
        return True

    def forget(self, who: T) -> None:
        """`who` closed, or was resumed."""
        self._waiting.pop(who, None)

    def next_due(self) -> T | None:
        """The connection waiting longest, taken off the list; None when none waits."""
        if not self._waiting:
            return None
        who, _ = self._waiting.popitem(last=False)
        return who

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def __contains__(self, who: object) -> bool:
        return who in self._waiting
