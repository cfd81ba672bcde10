"""The agent events part of `agentpulse status`: what each remoted process last wrote to
`queue/events/<index>.state` (received, published, spooled, dropped, paused agents)."""

from __future__ import annotations

import time
from typing import Any

from agentpulse.escape import for_terminal
from agentpulse.ingest.publisher import read_states
from agentpulse.paths import Home

STALE = 10.0  # seconds: an older state file is from a process that is not running


def render_agent_events(home: Home, now: float | None = None) -> str:
    states = read_states(home)
    if not states:
        return ""
    now = time.time() if now is None else now
    total: dict[str, int] = {}
    for state in states:
        for name in (
            "received",
            "published",
            "spooled_bytes",
            "spool_limit",
            "dropped",
            "paused_now",
            "load_pauses",
        ):
            total[name] = total.get(name, 0) + int(state.get(name, 0))
    lines = [
        "",
        f"Agent events: {total['received']} received, {total['published']} published to JetStream, "
        f"{total['dropped']} dropped",
        f"  spool: {_mib(total['spooled_bytes'])} of {_mib(total['spool_limit'])}; "
        f"agents paused now: {total['paused_now']}",
    ]
    if total["load_pauses"]:
        lines.append(
            f"  paused {total['load_pauses']} times to keep keep-alives on time (more events offered than "
            "the loop handles: remoted/congestion.py)"
        )
    if total["dropped"]:
        lines.append("  DROPPED events: the spool was full with <drop_when_full>yes (or over UDP)")
    for index, state in enumerate(states):
        stale = now - float(state.get("updated", 0)) > STALE
        lines.append(
            f"  process {index}: NATS {for_terminal(str(state.get('nats', '?')))}" + _stale(stale, state)
        )
    return "\n".join(lines) + "\n"


def _stale(stale: bool, state: dict[str, Any]) -> str:
    if not stale:
        return ""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(state.get("updated", 0))))
    return f" (last written {when}: not running)"


def _mib(count: int) -> str:
    return f"{count / (1 << 20):.1f} MiB"
