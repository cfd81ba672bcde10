"""Retry delays: how long a retry loop waits after its n-th failure in a row (the agent, the simulator, events).

One formula: `base`, then doubling per failure, at most `cap`, then scaled by a random factor drawn evenly
from [1 - jitter, 1 + jitter] so that clients refused together do not all come back in the same instant.
Pure apart from the random source, which the caller may pass (tests pin it). Each caller keeps its own
numbers: they are part of its behaviour.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Final

MAX_DOUBLINGS: Final = 16  # past it the delay stops growing, long after any cap, and 2**n stays small
SATURATED: Final = MAX_DOUBLINGS + 1  # an attempt whose delay is the cap (any cap below base x 65,536)


def jittered(delay: float, jitter: float, rand: Callable[[], float] = random.random) -> float:
    """`delay` scaled by a factor drawn evenly from [1 - jitter, 1 + jitter]; `rand` is not called at jitter 0."""
    if not jitter:
        return delay
    return delay * (1 - jitter + 2 * jitter * rand())


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    jitter: float = 0.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """The wait after the `attempt`-th failure in a row (1 for the first, below 1 counts as 1).

    base, 2 x base, 4 x base ... at most `cap`, then jittered (see `jittered`).
    """
    doublings = min(max(attempt, 1) - 1, MAX_DOUBLINGS)
    return jittered(min(cap, base * (1 << doublings)), jitter, rand)
