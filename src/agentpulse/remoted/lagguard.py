"""Established agents first: while its loop is behind on the agents it holds, a remoted process takes no new one.

The acceptor's handshake budget (acceptor.py) paces new connections by the startups in flight; it cannot
see a loop that falls behind on keep-alives alone (a machine whose other processes take the CPU, a worker
holding more agents than its share of a core serves). Then every newcomer taken adds work the loop is
already late for, and the agents it holds wait for their acks until they give up: connected agents lost to
newcomers. `LagGuard` decides, from the loop's lag, when the listener stops taking agents and when it
takes them again:

- **hold** when the lag exceeds `HOLD_LAG` beyond what handshakes explain: those in flight and those
  completed within the lag's own span (the late iteration may have been theirs), each at most
  `HANDSHAKE_COST` of loop time, or 1 / the measured handshake rate when that is less. A storm's
  startups lag the loop too, and the budget already paces those. With worker processes a newcomer's
  first message also waits for the manager's admission answer (replay.py): an answer the oldest question
  has waited longer than `HOLD_LAG` for holds too (the manager behind on everyone's records);
- **resume** once the lag has stayed under `RESUME_LAG` for `RESUME_AFTER` seconds (hysteresis: a loop
  that just caught up is not loaded again at once);
- after `REFUSE_AFTER` seconds held, the connections waiting in the kernel's accept queue are **refused
  at once** with a clean close: an agent refused retries after its `retry_interval` (and with several
  workers its new connection may reach another one), while one left in the queue would wait out its
  60 s `recv_timeout`.

Pure logic on numbers it is given (the lag, the handshakes in flight, the rate, the time): no I/O.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

HOLD_LAG = 2.0  # seconds of lag not explained by the handshakes in flight, from which newcomers wait
RESUME_LAG = 0.5  # seconds: the loop is caught up below this ...
RESUME_AFTER = 2.0  # ... and must stay so this long before newcomers are taken again
REFUSE_AFTER = 10.0  # seconds held, after which queued connections are refused at once
# Seconds of loop one handshake may explain at most: a startup and its first keep-alive measured 3-8 ms
# on a starved core (bench/RESULTS.md); a rate measured while few agents connected says more, not less.
HANDSHAKE_COST = 0.02
SAMPLE_EVERY = 0.1  # seconds between two samples of the handshakes completed (the loop lag's own tick)
SAMPLES = 1200  # at most: two minutes of them, more than any lag worth explaining


@dataclass(slots=True)
class LagGuard:
    """Whether the listener may take new connections now, given the loop's lag (`update`)."""

    hold_lag: float = HOLD_LAG
    resume_lag: float = RESUME_LAG
    resume_after: float = RESUME_AFTER
    refuse_after: float = REFUSE_AFTER
    held_since: float | None = None  # when the current hold began; None: not held
    calm_since: float | None = None  # while held: since when the lag has stayed under resume_lag
    holds: int = 0  # holds begun so far
    unexplained: float = 0.0  # at the last update: the lag the handshakes do not explain
    # (monotonic time, handshakes completed so far), oldest first, at least SAMPLE_EVERY apart
    _samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=SAMPLES))

    @property
    def held(self) -> bool:
        return self.held_since is not None

    def update(
        self, lag: float, in_flight: int, done: int, rate: float, now: float, answer_wait: float = 0.0
    ) -> bool:
        """True: new connections may be taken. `lag`: the loop's current lag (s); `in_flight`: handshakes
        accepted and not yet answered; `done`: handshakes completed so far (a running count); `rate`:
        handshakes per second this process serves at best; `answer_wait`: how long the oldest admission
        question has waited for the manager (s)."""
        cost = HANDSHAKE_COST if rate <= 0 else min(HANDSHAKE_COST, 1.0 / rate)
        explained = (in_flight + self._done_within(lag + SAMPLE_EVERY, done, now)) * cost
        self.unexplained = max(lag - explained, answer_wait)
        lag = max(lag, answer_wait)
        if self.held_since is None:
            if self.unexplained > self.hold_lag:
                self.held_since, self.calm_since = now, None
                self.holds += 1
                return False
            return True
        if lag >= self.resume_lag:
            self.calm_since = None
            return False
        if self.calm_since is None:
            self.calm_since = now
        if now - self.calm_since < self.resume_after:
            return False
        self.held_since = self.calm_since = None
        return True

    def _done_within(self, span: float, done: int, now: float) -> int:
        """Handshakes completed within the last `span` seconds (counted from the newest sample at least
        that old; the oldest kept when none is)."""
        samples = self._samples
        if not samples or now - samples[-1][0] >= SAMPLE_EVERY:
            samples.append((now, done))
        since = now - span
        base = samples[0][1]
        for at, count in reversed(samples):
            if at <= since:
                base = count
                break
        return done - base

    def refusing(self, now: float) -> bool:
        """Held long enough that what waits in the accept queue is refused rather than kept waiting."""
        return self.held_since is not None and now - self.held_since >= self.refuse_after
