"""A hashed timing wheel: one deadline per item, O(1) to schedule or cancel, fired once per tick.

The simulator keeps one deadline per agent (ramp slot, back-off, handshake timeout, next keep-alive) in
it instead of a timer or a task per agent. Items carry a generation (`gen`): scheduling bumps it, so a
stale entry left in a slot is skipped when its slot comes round.
"""

from __future__ import annotations

import math
from typing import Generic, Protocol, TypeVar


class _Timed(Protocol):
    gen: int


T = TypeVar("T", bound=_Timed)


class TimingWheel(Generic[T]):
    """A hashed timing wheel: each item has at most one live deadline, kept as (tick, generation, item).

    `schedule()` bumps the item's generation, so an older entry still in some slot is skipped when its
    slot comes round; scheduling and cancelling are O(1). `advance(now)` visits the slots passed since the
    last call (at most one revolution) and returns the items due, in deadline order (sorted only after a
    stall longer than a revolution). Entries for a later revolution stay in their slot.
    """

    def __init__(self, tick: float, slots: int, now: float) -> None:
        self.tick = tick
        self._slots: list[list[tuple[int, int, T]]] = [[] for _ in range(slots)]
        self._done = math.floor(now / tick)  # the last tick processed

    def schedule(self, item: T, due: float) -> None:
        item.gen += 1
        tick = max(math.ceil(due / self.tick), self._done + 1)
        self._slots[tick % len(self._slots)].append((tick, item.gen, item))

    @staticmethod
    def cancel(item: T) -> None:
        item.gen += 1

    def advance(self, now: float) -> list[T]:
        target = math.floor(now / self.tick)
        if target <= self._done:
            return []
        size = len(self._slots)
        stalled = target - self._done > size  # a whole revolution passed: slots no longer follow time
        fired: list[tuple[int, T]] = []
        for tick in range(self._done + 1, self._done + 1 + min(target - self._done, size)):
            slot = tick % size
            bucket = self._slots[slot]
            if not bucket:
                continue
            later: list[tuple[int, int, T]] = []
            for entry in bucket:
                due, gen, item = entry
                if gen != item.gen:
                    continue
                if due <= target:
                    fired.append((due, item))
                else:
                    later.append(entry)
            self._slots[slot] = later
        self._done = target
        if stalled:
            fired.sort(key=_first)
        return [item for _, item in fired]


def _first(entry: tuple[int, object]) -> int:
    return entry[0]
