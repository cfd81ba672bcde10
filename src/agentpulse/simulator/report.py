"""What the run tells its user: the live progress line on stderr, the JSON summary and the exit code.

The progress line is rewritten in place on a terminal and printed every 5 s otherwise; merging the
processes' snapshots costs the parent, so it is only done when a line is due (`Progress.due()`).
"""

from __future__ import annotations

import contextlib
import time
from typing import IO

from agentpulse.simulator.plan import SimulatorConfig
from agentpulse.simulator.snapshot import REPORT_INTERVAL, Snapshot


def summarize(config: SimulatorConfig, snapshot: Snapshot) -> dict[str, object]:
    """The JSON summary of a run."""
    if snapshot.steady_s > 0:
        rate = snapshot.steady_acked / snapshot.steady_s
    else:
        rate = snapshot.keepalives_acked / snapshot.elapsed if snapshot.elapsed > 0 else 0.0
    return {
        "agents": config.agents,
        "connected": snapshot.connected,
        "acked": snapshot.acked,
        "connected_at_end": snapshot.connected_now,
        "acked_at_end": snapshot.acked_now,
        "errors": sum(snapshot.errors.values()),
        "error_kinds": dict(sorted(snapshot.errors.items())),
        "retries": sum(snapshot.retries.values()),
        "retry_kinds": dict(sorted(snapshot.retries.items())),
        "keepalives_sent": snapshot.keepalives_sent,
        "keepalives_acked": snapshot.keepalives_acked,
        "events_sent": snapshot.events_sent,
        "undelivered_agents": snapshot.undelivered_agents,
        "events_per_agent": config.events_per_agent,
        "event_mix": ",".join(config.event_mix),
        "ack_latency_ms": snapshot.latency.summary_ms(),
        "steady_ack_latency_ms": snapshot.steady_latency.summary_ms(),
        "startup_latency_ms": snapshot.startup_latency.summary_ms(),
        "connected_to_startup_ms": snapshot.connected_to_startup.summary_ms(),
        "tick_ms": snapshot.tick.summary_ms(),
        "duration_s": round(snapshot.elapsed, 3),
        "steady_s": round(snapshot.steady_s, 3),
        "keepalives_per_s": round(rate, 1),
        "requests_answered": snapshot.requests_answered,
        "forced_reconnects": snapshot.forced_reconnects,
        "failovers": snapshot.failovers,
        "handshakes_by_server": dict(sorted(snapshot.handshakes_by_server.items())),
        "shared_received": snapshot.shared_received,
        "shared_failed": snapshot.shared_failed,
        "failed": {"silent": snapshot.silent, "shutdown": snapshot.shutdown},
        "ciphers": dict(sorted(snapshot.ciphers.items())),
        "processes": snapshot.processes,
        "sources": config.sources,
        "protocol": str(config.protocol),
        "manager": ",".join(f"{host}:{port}" for host, port in config.servers),
        "interval_s": config.interval,
        "ramp_s": config.ramp,
        "precompute": config.precompute,
        "batch_reads": config.batch_reads,
        "peak": config.peak,
    }


def exit_code(summary: dict[str, object]) -> int:
    """0 when every agent connected and was acked and nothing went wrong, else 1."""
    agents = summary["agents"]
    ok = summary["connected"] == agents and summary["acked"] == agents and summary["errors"] == 0
    return 0 if ok else 1


class Progress:
    """The live line on stderr: rewritten in place (`\\r`) on a terminal, a plain line every 5 s otherwise."""

    def __init__(self, mode: str, stream: IO[str], agents: int) -> None:
        self.stream = stream
        self.agents = agents
        self.enabled = mode != "never"
        self.tty = mode == "always" or (mode == "auto" and stream.isatty())
        self.every = REPORT_INTERVAL if self.tty else 5.0
        self._last = time.monotonic()
        self._previous: Snapshot | None = None
        self._width = 0

    def due(self) -> bool:
        """Whether a line is to be written now: merging the processes' snapshots is only worth it then."""
        return self.enabled and time.monotonic() - self._last >= self.every

    def update(self, snapshot: Snapshot) -> None:
        if not self.due():
            return
        self._last = time.monotonic()
        line = self.render(snapshot, self._previous)
        self._previous = snapshot.copy()
        with contextlib.suppress(OSError, ValueError):
            if self.tty:
                self.stream.write("\r" + line.ljust(self._width))
                self._width = len(line)
            else:
                self.stream.write(line + "\n")
            self.stream.flush()

    def render(self, current: Snapshot, previous: Snapshot | None) -> str:
        window = current.latency.since(previous.latency) if previous else current.latency
        seconds = current.elapsed - (previous.elapsed if previous else 0.0)
        acked = current.keepalives_acked - (previous.keepalives_acked if previous else 0)
        rate = acked / seconds if seconds > 0 else 0.0

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}"

        return (
            f"[{current.elapsed:6.1f}s] connected {current.connected_now}/{self.agents}"
            f"  acked {current.acked_now}  errors {sum(current.errors.values())}"
            f"  retries {sum(current.retries.values())}  keep-alives/s {rate:,.0f}"
            f"  ack p50 {ms(window.percentile_ms(0.5))} ms p99 {ms(window.percentile_ms(0.99))} ms"
        )

    def finish(self) -> None:
        if self.enabled and self.tty and self._width:
            with contextlib.suppress(OSError, ValueError):
                self.stream.write("\n")
                self.stream.flush()
