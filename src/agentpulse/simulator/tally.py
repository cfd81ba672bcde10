"""`Tally`: what one simulator process counts while it runs, and the `Snapshot` it reports from that.

The fleet's loop owns the agents and their timers; the tally only adds up (one attribute bump per event on
the hot path) and, a few times a second, turns the sums into a `Snapshot` for the pipe to the parent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from agentpulse.simulator.agents import RUNNING, SimAgent
from agentpulse.simulator.histogram import LatencyHistogram
from agentpulse.simulator.snapshot import Snapshot, add_count

COUNT_INTERVAL: Final = 5.0  # how often a report walks every agent for the live counts (s)


def count_live(agents: Sequence[SimAgent]) -> tuple[int, int]:
    """Agents connected and acked right now: a walk over every agent, so not at every report."""
    connected_now = acked_now = 0
    for agent in agents:
        if agent.connection is not None and agent.connection.up:
            connected_now += 1
            if agent.state == RUNNING:
                acked_now += 1
    return connected_now, acked_now


@dataclass(slots=True)
class Tally:
    """One process's counters and histograms (see `Snapshot` for what each means)."""

    errors: dict[str, int] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)
    connected: int = 0
    acked: int = 0
    keepalives_sent: int = 0
    keepalives_acked: int = 0
    events_sent: int = 0
    undelivered_agents: int = 0
    requests_answered: int = 0
    forced_reconnects: int = 0
    failovers: int = 0  # moves to the next server after a failed connect or handshake
    handshakes_by_server: dict[str, int] = field(default_factory=dict)
    shared_received: int = 0  # pushed merged.mg files whose md5 matched
    shared_failed: int = 0
    silent: int = 0
    shutdown: int = 0
    ciphers: dict[str, int] = field(default_factory=dict)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    startup_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    connected_to_startup: LatencyHistogram = field(default_factory=LatencyHistogram)
    tick: LatencyHistogram = field(default_factory=LatencyHistogram)
    steady_base: tuple[int, float] | None = None  # (acked, time) when the steady window began
    steady_latency_base: LatencyHistogram | None = None
    counted: tuple[float, int, int] = (-math.inf, 0, 0)  # (when, connected_now, acked_now) of the last walk

    def error(self, kind: str) -> None:
        add_count(self.errors, kind)

    def mark_steady(self, now: float) -> None:
        """The steady figures (ack rate and latency) count from `now`."""
        self.steady_base = (self.keepalives_acked, now)
        self.steady_latency_base = self.latency.copy()

    def snapshot(
        self, agents: Sequence[SimAgent], started: float, now: float, final: bool = False
    ) -> Snapshot:
        if final or now - self.counted[0] >= COUNT_INTERVAL:
            self.counted = (now, *count_live(agents))
        _, connected_now, acked_now = self.counted
        errors = dict(self.errors)
        if final:
            never_connected = sum(1 for agent in agents if not agent.connected_once)
            never_acked = sum(1 for agent in agents if agent.connected_once and not agent.acked_once)
            if never_connected:
                add_count(errors, "never_connected", never_connected)
            if never_acked:
                add_count(errors, "never_acked", never_acked)
        steady_acked, steady_s = 0, 0.0
        if self.steady_base is not None:
            steady_acked = self.keepalives_acked - self.steady_base[0]
            steady_s = now - self.steady_base[1]
        return Snapshot(
            agents=len(agents),
            connected=self.connected,
            acked=self.acked,
            connected_now=connected_now,
            acked_now=acked_now,
            errors=errors,
            retries=dict(self.retries),
            keepalives_sent=self.keepalives_sent,
            keepalives_acked=self.keepalives_acked,
            events_sent=self.events_sent,
            undelivered_agents=self.undelivered_agents,
            steady_acked=steady_acked,
            steady_s=steady_s,
            requests_answered=self.requests_answered,
            forced_reconnects=self.forced_reconnects,
            failovers=self.failovers,
            handshakes_by_server=dict(self.handshakes_by_server),
            shared_received=self.shared_received,
            shared_failed=self.shared_failed,
            silent=self.silent,
            shutdown=self.shutdown,
            ciphers=dict(self.ciphers),
            latency=self.latency.copy(),
            steady_latency=(
                self.latency.since(self.steady_latency_base)
                if self.steady_latency_base is not None
                else LatencyHistogram()
            ),
            startup_latency=self.startup_latency.copy(),
            connected_to_startup=self.connected_to_startup.copy(),
            tick=self.tick.copy(),
            elapsed=now - started if started else 0.0,
            processes=1,
        )
