"""`Snapshot`: what one process of the fleet (or, merged, the whole run) has counted so far.

Plain values and histograms only, because it crosses a pipe from each spawned process to the parent
several times a second. Counters by kind (errors, retries, ciphers) are open sets of names that end up as
keys of the JSON summary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from agentpulse.simulator.histogram import LatencyHistogram

REPORT_INTERVAL: Final = 0.5  # how often a process hands a Snapshot to its reporter (s)


def add_count(counts: dict[str, int], kind: str, amount: int = 1) -> None:
    counts[kind] = counts.get(kind, 0) + amount


@dataclass(slots=True)
class Snapshot:
    """What one process (or, merged, the whole run) has seen so far. Plain values: it crosses a pipe."""

    agents: int = 0
    connected: int = 0  # agents whose connection was established at least once
    acked: int = 0  # agents whose startup was acknowledged at least once
    connected_now: int = 0
    acked_now: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)
    keepalives_sent: int = 0
    keepalives_acked: int = 0
    events_sent: int = 0
    undelivered_agents: int = 0  # at the end: agents whose last keep-alive got no ack
    steady_acked: int = 0  # keep-alives acked after the ramp
    steady_s: float = 0.0
    requests_answered: int = 0
    forced_reconnects: int = 0
    failovers: int = 0  # moves to the next server after a failed connect or handshake
    handshakes_by_server: dict[str, int] = field(default_factory=dict)  # acked startups, by host:port
    shared_received: int = 0  # pushed merged.mg files whose md5 matched
    shared_failed: int = 0
    silent: int = 0
    shutdown: int = 0
    ciphers: dict[str, int] = field(default_factory=dict)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    steady_latency: LatencyHistogram = field(default_factory=LatencyHistogram)  # after the ramp
    startup_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    # The generator's own lateness, which a real agent does not have: the time from a connect's
    # completion (as this loop saw it) to the startup's write, and each loop turn's length (10 ms aimed).
    connected_to_startup: LatencyHistogram = field(default_factory=LatencyHistogram)
    tick: LatencyHistogram = field(default_factory=LatencyHistogram)
    elapsed: float = 0.0
    processes: int = 1

    def copy(self) -> Snapshot:
        return Snapshot.merged([self])

    @classmethod
    def merged(cls, parts: Sequence[Snapshot]) -> Snapshot:
        total = cls(processes=0)
        for part in parts:
            for name in (
                "agents",
                "connected",
                "acked",
                "connected_now",
                "acked_now",
                "keepalives_sent",
                "keepalives_acked",
                "events_sent",
                "undelivered_agents",
                "steady_acked",
                "requests_answered",
                "forced_reconnects",
                "failovers",
                "shared_received",
                "shared_failed",
                "silent",
                "shutdown",
                "processes",
            ):
                setattr(total, name, getattr(total, name) + getattr(part, name))
            for mine, theirs in (
                (total.errors, part.errors),
                (total.retries, part.retries),
                (total.ciphers, part.ciphers),
                (total.handshakes_by_server, part.handshakes_by_server),
            ):
                for kind, amount in theirs.items():
                    add_count(mine, kind, amount)
            total.latency.merge(part.latency)
            total.steady_latency.merge(part.steady_latency)
            total.startup_latency.merge(part.startup_latency)
            total.connected_to_startup.merge(part.connected_to_startup)
            total.tick.merge(part.tick)
            total.elapsed = max(total.elapsed, part.elapsed)
            total.steady_s = max(total.steady_s, part.steady_s)
        return total
