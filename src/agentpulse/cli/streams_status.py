"""The NATS streams part of `agentpulse status`: each stream agentpulse writes, as the manager last read it
back (`var/run/agentpulse-streams.json`, written by events/streamwatch.py every 10 s while NATS is up)."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any, Final

from agentpulse.escape import for_terminal
from agentpulse.paths import Home

STALE: Final = 60.0  # seconds: older, the manager is not running or has not reached NATS since


def render_streams(home: Home, now: float | None = None) -> str:
    state: dict[str, Any] | None = None
    with contextlib.suppress(OSError, ValueError):
        state = json.loads(home.nats_streams_state.read_text())
    if not isinstance(state, dict) or not isinstance(state.get("streams"), dict):
        return ""
    now = time.time() if now is None else now
    updated = float(state.get("updated", 0))
    heading = "NATS streams:"
    if now - updated > STALE:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(updated))
        heading = f"NATS streams (last read {when}: the manager is not running, or NATS is away since):"
    lines = ["", heading]
    for name, stream in state["streams"].items():
        lines.append(f"  {for_terminal(str(name))}: {_stream(stream)}")
    return "\n".join(lines) + "\n"


def _stream(stream: Any) -> str:
    if not isinstance(stream, dict):
        return "?"
    if "error" in stream:
        return for_terminal(str(stream["error"]))
    replicas, current = int(stream.get("replicas", 0)), int(stream.get("current", 0))
    text = f"{current} of {replicas} replicas current"
    leader = stream.get("leader")
    if leader:
        text += f", leader {for_terminal(str(leader))}"
    text += f", {int(stream.get('messages', 0)):,} messages"
    if stream.get("degraded"):
        peers = stream.get("peers") or {}
        lagging = sorted(str(peer) for peer, ok in peers.items() if not ok)
        behind = for_terminal(", ".join(lagging)) if lagging else "none named"
        leaderless = "" if leader else "; no leader (electing)"
        text = f"DEGRADED: {text}; behind or offline: {behind}{leaderless}"
    return text
