"""The NATS streams part of `agentpulse status`, from the file the manager's stream watch writes."""

from __future__ import annotations

import json
from pathlib import Path

from agentpulse.cli.streams_status import STALE, render_streams
from agentpulse.paths import Home

NOW = 1_800_000_000.0


def home_with(tmp_path: Path, state: object) -> Home:
    home = Home(tmp_path)
    home.run_dir.mkdir(parents=True)
    home.nats_streams_state.write_text(json.dumps(state))
    return home


def stream(leader: str | None, peers: dict[str, bool], messages: int = 0) -> dict[str, object]:
    """One stream of 3 replicas as the watch writes it."""
    current = sum(peers.values())
    return {
        "replicas": 3,
        "current": current,
        "degraded": current < 3 or leader is None,
        "leader": leader,
        "peers": peers,
        "messages": messages,
    }


def healthy(messages: int) -> dict[str, object]:
    return stream("n1", {"n1": True, "n2": True, "n3": True}, messages)


def test_no_file_no_section(tmp_path: Path) -> None:
    assert render_streams(Home(tmp_path), NOW) == ""
    assert render_streams(home_with(tmp_path, ["not", "a", "state"]), NOW) == ""


def test_each_stream_its_replicas_and_a_degraded_one_said_so(tmp_path: Path) -> None:
    degraded = stream("n1", {"n1": True, "n2": True, "n3": False}, 12)
    streams = {
        "AGENT_STATUS": healthy(1234),
        "AGENT_EVENTS": degraded,
        "KV_agent_status": {"error": "does not exist (it is created at the first publish)"},
    }
    text = render_streams(home_with(tmp_path, {"updated": NOW - 5, "streams": streams}), NOW)
    assert text.splitlines() == [
        "",
        "NATS streams:",
        "  AGENT_STATUS: 3 of 3 replicas current, leader n1, 1,234 messages",
        "  AGENT_EVENTS: DEGRADED: 2 of 3 replicas current, leader n1, 12 messages; behind or offline: n3",
        "  KV_agent_status: does not exist (it is created at the first publish)",
    ]


def test_a_stream_electing_its_leader(tmp_path: Path) -> None:
    electing = stream(None, {"n2": True, "n3": True})
    text = render_streams(home_with(tmp_path, {"updated": NOW, "streams": {"AGENT_STATUS": electing}}), NOW)
    assert (
        "AGENT_STATUS: DEGRADED: 2 of 3 replicas current, 0 messages; behind or offline: none named; no "
        in text
    )


def test_an_old_file_says_it_is_old(tmp_path: Path) -> None:
    state = {"updated": NOW - STALE - 1, "streams": {"AGENT_STATUS": healthy(1)}}
    heading = render_streams(home_with(tmp_path, state), NOW).splitlines()[1]
    assert heading.startswith("NATS streams (last read ") and "not running, or NATS is away" in heading


def test_names_from_the_servers_are_escaped_for_the_terminal(tmp_path: Path) -> None:
    hostile = stream("n1\x1b[2J", {"n1\x1b[2J": True, "evil\n": False, "n3": True})
    text = render_streams(home_with(tmp_path, {"updated": NOW, "streams": {"S\x1b]0;x": hostile}}), NOW)
    assert "\x1b" not in text and "evil\n" not in text
    assert "S\\x1b]0;x: DEGRADED" in text and "leader n1\\x1b[2J" in text and "offline: evil\\n" in text
