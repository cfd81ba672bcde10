"""`wazuh-agentd.state` and the getstate JSON, as Wazuh's agentd writes them."""

from __future__ import annotations

import json
import time
from pathlib import Path

from agentpulse.agent.state import (
    CONNECTED,
    AgentState,
    getstate_reply,
    render_state_file,
    write_state_file,
)

# Wazuh's agentd state file, verbatim (notify_time 20, time-reconnect 60).
REFERENCE_CONNECTED = """\
# State file for wazuh-agentd

# Agent status:
# - pending:      waiting to get connected.
# - connected:    connection established with manager in the last 20 seconds.
# - disconnected: connection lost or no ACK received in the last 60 seconds.
status='connected'

# Last time a keepalive was sent
last_keepalive='2024-05-01 12:00:00'

# Last time a control message was received
last_ack='2024-05-01 12:00:05'

# Number of generated events
msg_count='123'

# Number of messages (events + control messages) sent to the manager
msg_sent='456'

# Number of events currently buffered
# Empty if anti-flooding mechanism is disabled
msg_buffer='0'
"""


def local(text: str) -> float:
    """Epoch seconds of a local wall-clock time, the way agentd's time(0) would have stored it."""
    return time.mktime(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


def test_connected_state_matches_the_reference_line_for_line() -> None:
    state = AgentState(
        status=CONNECTED,
        last_keepalive=local("2024-05-01 12:00:00"),
        last_ack=local("2024-05-01 12:00:05"),
        msg_count=123,
        msg_sent=456,
    )
    text = render_state_file(state, notify_time=20, time_reconnect=60)
    assert text.splitlines() == REFERENCE_CONNECTED.splitlines()
    assert text == REFERENCE_CONNECTED


def test_initial_state_is_pending_with_empty_timestamps_and_zero_counters() -> None:
    expected = (
        REFERENCE_CONNECTED.replace("status='connected'", "status='pending'")
        .replace("last_keepalive='2024-05-01 12:00:00'", "last_keepalive=''")
        .replace("last_ack='2024-05-01 12:00:05'", "last_ack=''")
        .replace("msg_count='123'", "msg_count='0'")
        .replace("msg_sent='456'", "msg_sent='0'")
    )
    assert render_state_file(AgentState(), notify_time=20, time_reconnect=60) == expected


def test_header_uses_notify_time_and_time_reconnect_as_integers() -> None:
    lines = render_state_file(AgentState(), notify_time=1.0, time_reconnect=3.0).splitlines()
    assert lines[4] == "# - connected:    connection established with manager in the last 1 seconds."
    assert lines[5] == "# - disconnected: connection lost or no ACK received in the last 3 seconds."


def test_msg_buffer_is_empty_when_the_buffer_is_disabled() -> None:
    text = render_state_file(AgentState(buffer_enabled=False), notify_time=20, time_reconnect=60)
    assert text.splitlines()[-1] == "msg_buffer=''"


def test_getstate_reply_is_compact_json_with_the_state_fields_in_order() -> None:
    state = AgentState(status=CONNECTED, last_keepalive=local("2024-05-01 12:00:00"), msg_count=1, msg_sent=4)
    reply = getstate_reply(state)
    assert reply == (
        '{"error":0,"data":{"status":"connected","last_keepalive":"2024-05-01 12:00:00","last_ack":"",'
        '"msg_count":1,"msg_sent":4,"msg_buffer":0,"buffer_enabled":true}}'
    )
    assert json.loads(reply)["data"]["status"] == "connected"


def test_state_file_is_replaced_through_a_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "wazuh-agentd.state"
    path.write_text("old")
    write_state_file(path, REFERENCE_CONNECTED)
    assert path.read_text() == REFERENCE_CONNECTED
    assert sorted(child.name for child in tmp_path.iterdir()) == ["wazuh-agentd.state"]
