"""The agent's own state, as Wazuh's agentd reports it: `var/run/wazuh-agentd.state` and the `getstate` JSON.

`AgentState` is the handful of values agentd tracks; `render_state_file()` and `getstate_reply()` turn it
into text and are pure (time zone aside: timestamps are local time, as Wazuh's `localtime_r` gives).
`write_state_file()` is the only I/O: write `<file>.temp`, then `rename()` it over the old file, so a
reader (an operator's `cat`, a monitoring script) never sees half a file. It blocks: call it off the loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

Status = Literal["pending", "connected", "disconnected"]
PENDING: Final[Status] = "pending"
CONNECTED: Final[Status] = "connected"
DISCONNECTED: Final[Status] = "disconnected"

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
TEMP_SUFFIX = ".temp"
DEFAULT_STATE_INTERVAL = 5.0  # agent.state_interval

_TEMPLATE = """\
# State file for wazuh-agentd

# Agent status:
# - pending:      waiting to get connected.
# - connected:    connection established with manager in the last {notify_time} seconds.
# - disconnected: connection lost or no ACK received in the last {time_reconnect} seconds.
status='{status}'

# Last time a keepalive was sent
last_keepalive='{last_keepalive}'

# Last time a control message was received
last_ack='{last_ack}'

# Number of generated events
msg_count='{msg_count}'

# Number of messages (events + control messages) sent to the manager
msg_sent='{msg_sent}'

# Number of events currently buffered
# Empty if anti-flooding mechanism is disabled
msg_buffer='{msg_buffer}'
"""


@dataclass(slots=True)
class AgentState:
    """What `w_agentd_state_update()` tracks. Timestamps are epoch seconds, None until first set."""

    status: Status = PENDING
    last_keepalive: float | None = None
    last_ack: float | None = None
    msg_count: int = 0
    msg_sent: int = 0
    msg_buffer: int = 0
    buffer_enabled: bool = True


def format_time(timestamp: float | None) -> str:
    """Local time as `%Y-%m-%d %H:%M:%S`, or '' when never set."""
    if timestamp is None:
        return ""
    return time.strftime(TIME_FORMAT, time.localtime(timestamp))


def render_state_file(state: AgentState, *, notify_time: float, time_reconnect: float) -> str:
    """The exact text of `wazuh-agentd.state`; the header's numbers are `%d` of the two settings."""
    return _TEMPLATE.format(
        notify_time=int(notify_time),
        time_reconnect=int(time_reconnect),
        status=state.status,
        last_keepalive=format_time(state.last_keepalive),
        last_ack=format_time(state.last_ack),
        msg_count=state.msg_count,
        msg_sent=state.msg_sent,
        msg_buffer=state.msg_buffer if state.buffer_enabled else "",
    )


def state_data(state: AgentState) -> dict[str, object]:
    """The `data` object of the getstate answer, keys in agcom's order."""
    return {
        "status": state.status,
        "last_keepalive": format_time(state.last_keepalive),
        "last_ack": format_time(state.last_ack),
        "msg_count": state.msg_count,
        "msg_sent": state.msg_sent,
        "msg_buffer": state.msg_buffer if state.buffer_enabled else 0,
        "buffer_enabled": state.buffer_enabled,
    }


def getstate_reply(state: AgentState) -> str:
    """`{"error":0,"data":{...}}`, compact as cJSON_PrintUnformatted writes it."""
    return json.dumps({"error": 0, "data": state_data(state)}, separators=(",", ":"))


def write_state_file(path: Path, text: str) -> None:
    """Write `<path>.temp` and rename it over `path`. Blocking."""
    temp = path.with_name(path.name + TEMP_SUFFIX)
    try:
        with open(temp, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temp, path)
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()
        raise
