"""Replays: may a message on a connection that is not its agent's current one start using it?

The rule is `wire.counters.first_message_verdict`; this module gives it its inputs. In one process the
answer comes at once from what the process knows (`LocalReplayGuard`). With several workers an agent may
have last talked to another worker, so the worker asks the manager (`PipeReplayGuard`) and the connection
waits; the manager answers from its `ReplayBook`: the highest counter each agent ever had accepted
anywhere and which worker holds it. Only a new connection's first message waits; the danger is a stale
book, so a worker reports the last counter of an agent before it reports the agent's connection closed.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from agentpulse.remoted.pipe import PipeSink, Tag
from agentpulse.wire.counters import Holder, Verdict, first_message_verdict

# A worker waits this long for the manager's answer, then refuses the connection: under the agent's own 60 s
# wait for its startup's answer (recv_timeout), and long enough for a manager busy restarting.
ADMIT_TIMEOUT = 30.0
PROVISIONAL_TIMEOUT = 30.0  # an admission the worker never confirmed stops holding the agent

Answer = tuple[Verdict, int]  # the verdict and the highest counter the agent ever had accepted
AnswerCallback = Callable[[Answer | None], None]  # None: no answer in time


class ReplayGuard(Protocol):
    """How remoted learns the verdict for an agent it holds no connection of."""

    reports: bool  # whether `report()` wants the counters (building them costs a pass over the agents)

    def decide(self, agent_id: int, seq: int, startup: bool, highest: int) -> Answer | None:
        """The answer now, or None: then `ask()`, and the connection waits for the callback."""

    def ask(self, agent_id: int, seq: int, startup: bool, highest: int, callback: AnswerCallback) -> None: ...

    def unadmitted(self, agent_id: int) -> None:
        """An admitted connection closed before it was bound: the agent is not held after all."""

    def closing(self, agent_id: int, highest: int) -> None:
        """The agent's connection here is about to close: its last counter, before the close is told."""

    def report(self, counters: dict[int, int]) -> None:
        """The highest counters of agents that talked since the last report (for overtake and crashes)."""

    def unanswered_for(self) -> float:
        """Seconds the oldest question still waits for its answer (0: none waits): a manager that answers
        late holds every newcomer that asks, so the listener counts it as lag (acceptor.py)."""


class LocalReplayGuard:
    """One remoted process holds every connection: what it knows is the whole truth."""

    reports = False

    def __init__(self, strict: bool) -> None:
        self.strict = strict

    def decide(self, agent_id: int, seq: int, startup: bool, highest: int) -> Answer:
        verdict = first_message_verdict(
            highest=highest, seq=seq, startup=startup, holder=Holder.NONE, strict=self.strict
        )
        return verdict, highest

    def ask(self, agent_id: int, seq: int, startup: bool, highest: int, callback: AnswerCallback) -> None:
        callback(self.decide(agent_id, seq, startup, highest))

    def unadmitted(self, agent_id: int) -> None:
        pass

    def closing(self, agent_id: int, highest: int) -> None:
        pass

    def report(self, counters: dict[int, int]) -> None:
        pass

    def unanswered_for(self) -> float:
        return 0.0


class PipeReplayGuard:
    """A worker's side: questions go to the manager at once (not with the next batch), answers come back
    as `Command.VERDICT`. A question without an answer in `ADMIT_TIMEOUT` is answered None."""

    reports = True

    def __init__(self, sink: PipeSink, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.sink = sink
        self.monotonic = monotonic
        self._ids = itertools.count(1)
        # request -> (callback, its timeout, when asked): in the order asked, so the first is the oldest
        self._waiting: dict[int, tuple[AnswerCallback, asyncio.TimerHandle, float]] = {}

    def decide(self, agent_id: int, seq: int, startup: bool, highest: int) -> Answer | None:
        return None

    def ask(self, agent_id: int, seq: int, startup: bool, highest: int, callback: AnswerCallback) -> None:
        request = next(self._ids)
        timer = asyncio.get_running_loop().call_later(ADMIT_TIMEOUT, self._timed_out, request)
        self._waiting[request] = (callback, timer, self.monotonic())
        self.sink.send_now((Tag.ADMIT, request, agent_id, seq, startup, highest))

    def answered(self, request: int, verdict: str, highest: int) -> None:
        waiting = self._waiting.pop(request, None)
        if waiting is not None:
            callback, timer, _ = waiting
            timer.cancel()
            callback((Verdict(verdict), highest))

    def _timed_out(self, request: int) -> None:
        waiting = self._waiting.pop(request, None)
        if waiting is not None:
            waiting[0](None)

    def unadmitted(self, agent_id: int) -> None:
        self.sink.send_now((Tag.UNADMITTED, agent_id))

    def closing(self, agent_id: int, highest: int) -> None:
        self.sink.add((Tag.HIGHEST, {agent_id: highest}))

    def report(self, counters: dict[int, int]) -> None:
        if counters:
            self.sink.add((Tag.HIGHEST, counters))

    def unanswered_for(self) -> float:
        for _, _, asked_at in self._waiting.values():
            return max(0.0, self.monotonic() - asked_at)
        return 0.0


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    highest: int
    overtaken: list[int]  # workers whose stale connection of the agent must close (the new one takes it)


class ReplayBook:
    """The manager's side with several workers: per agent the highest counter accepted anywhere and
    when it last moved, and which worker holds it (the grace tracker's holders, plus admissions not yet
    bound). Workers report counters when an agent's connection closes and about once a second."""

    def __init__(
        self,
        holders: Callable[[int], int],  # agent -> bit mask of the workers holding it (the grace tracker)
        overtake_time: float,
        strict: bool,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.holders = holders
        self.overtake_time = overtake_time
        self.strict = strict
        self.monotonic = monotonic
        self._highest: dict[int, int] = {}
        self._seen: dict[int, float] = {}  # agent -> when its counter last moved (monotonic)
        self._provisional: dict[int, tuple[int, float]] = {}  # agent -> (worker, when admitted)

    def highest(self, agent_id: int) -> int:
        return self._highest.get(agent_id, 0)

    def decide(self, worker: int, agent_id: int, seq: int, startup: bool, highest: int) -> Decision:
        now = self.monotonic()
        highest = max(highest, self._highest.get(agent_id, 0))
        others = self._other_holders(worker, agent_id, now)
        holder = Holder.NONE
        if others:
            silent = now - self._seen.get(agent_id, 0.0)
            holder = Holder.LIVE if silent <= self.overtake_time else Holder.STALE
        verdict = first_message_verdict(
            highest=highest, seq=seq, startup=startup, holder=holder, strict=self.strict
        )
        overtaken: list[int] = []
        if verdict is Verdict.ADMIT:
            self._highest[agent_id] = seq
            self._seen[agent_id] = now
            self._provisional[agent_id] = (worker, now)
            overtaken = others
        return Decision(verdict, highest, overtaken)

    def _other_holders(self, worker: int, agent_id: int, now: float) -> list[int]:
        mask = self.holders(agent_id) & ~(1 << worker)
        others = [index for index in range(mask.bit_length()) if mask >> index & 1]
        provisional = self._provisional.get(agent_id)
        if provisional is not None:
            holder, at = provisional
            if now - at > PROVISIONAL_TIMEOUT:
                del self._provisional[agent_id]
            elif holder != worker and holder not in others:
                others.append(holder)
        return others

    def silent_for(self, agent_id: int) -> float:
        """Seconds since the agent's counter last moved on any worker (its connection's silence)."""
        return self.monotonic() - self._seen.get(agent_id, 0.0)

    def report(self, counters: dict[int, int]) -> None:
        now = self.monotonic()
        known, seen = self._highest, self._seen
        for agent_id, highest in counters.items():
            if highest > known.get(agent_id, 0):
                known[agent_id] = highest
            seen[agent_id] = now

    def bound(self, agent_id: int, worker: int) -> None:
        self._seen[agent_id] = self.monotonic()
        self.unadmitted(agent_id, worker)

    def unadmitted(self, agent_id: int, worker: int) -> None:
        provisional = self._provisional.get(agent_id)
        if provisional is not None and provisional[0] == worker:
            del self._provisional[agent_id]

    def worker_lost(self, worker: int) -> None:
        for agent_id in [a for a, (holder, _) in self._provisional.items() if holder == worker]:
            del self._provisional[agent_id]

    def forget(self, agent_ids: list[int]) -> None:
        """Their key changed or went: counters of the old key mean nothing for the new one."""
        for agent_id in agent_ids:
            self._highest.pop(agent_id, None)
            self._seen.pop(agent_id, None)
            self._provisional.pop(agent_id, None)
