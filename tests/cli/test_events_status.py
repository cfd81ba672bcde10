"""The agent events part of `agentpulse status`: the processes' state files summed, pauses for the loop
budget said when there were some."""

from __future__ import annotations

import json
from pathlib import Path

from agentpulse.cli.events_status import render_agent_events
from agentpulse.paths import Home


def write_states(home: Home, *states: dict[str, object]) -> None:
    home.events_spool_dir.mkdir(parents=True, exist_ok=True)
    for index, state in enumerate(states):
        (home.events_spool_dir / f"{index}.state").write_text(json.dumps(state))


def test_loop_budget_pauses_are_summed_over_the_processes(tmp_path: Path) -> None:
    home = Home(tmp_path)
    write_states(
        home,
        {"received": 10, "published": 9, "load_pauses": 3, "nats": "connected", "updated": 100.0},
        {"received": 5, "published": 5, "load_pauses": 4, "nats": "connected", "updated": 100.0},
    )
    text = render_agent_events(home, now=101.0)
    assert "Agent events: 15 received, 14 published to JetStream, 0 dropped" in text
    assert "paused 7 times to keep keep-alives on time" in text


def test_no_line_about_the_loop_budget_when_it_never_paused(tmp_path: Path) -> None:
    home = Home(tmp_path)
    write_states(home, {"received": 1, "nats": "connected", "updated": 100.0})
    assert "keep-alives on time" not in render_agent_events(home, now=101.0)
