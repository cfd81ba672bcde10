"""`<nats><agent_events>`: what happens to the events agents send (log lines, FIM, inventory, SCA ...).

On by default once `<nats>` is enabled: every event goes to the JetStream stream `AGENT_EVENTS` through a
bounded on-disk spool (`queue/events/`). The danger is the spool limit: when it is full the manager stops
reading the sockets of the agents that send events (their own buffers hold them) unless `drop_when_full`
says to drop, which is counted and logged. docs/events.md describes the options.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from agentpulse.config import convert as cv
from agentpulse.config.sections import Fields, SectionReader, Values
from agentpulse.config.xmltree import Node

__all__ = ["AgentEventsConfig", "read_agent_events"]

MIB: Final = 1 << 20
GIB: Final = 1 << 30
_SIZE_RE: Final = re.compile(r"(\d+(?:\.\d+)?)\s*([kKmMgG]?)[bB]?")
_SIZE_UNITS: Final = {"": 1, "k": 1 << 10, "m": MIB, "g": GIB}


@dataclass(frozen=True, slots=True)
class AgentEventsConfig:
    enabled: bool = True
    stream: str = "AGENT_EVENTS"
    max_age: float = 7 * 86400.0  # stream limit: older events are discarded (discard old)
    max_bytes: int = 10 * GIB  # stream limit: past it the oldest events are discarded
    duplicate_window: float = 120.0  # republished events within it are deduplicated (Nats-Msg-Id)
    spool_max_bytes: int = GIB  # queue/events/ on disk, every remoted process together
    drop_when_full: bool = False  # no: pause reading the senders; yes: drop new events (counted)
    max_eps_per_agent: float = 0.0  # events/s one agent may send before its socket is read more slowly; 0 off
    analysisd_socket: str | None = None  # a Unix datagram socket that gets each event's wazuh_line


def size(low: int) -> Callable[[str], int]:
    """Bytes from `1073741824`, `512MB`, `1G`, `64k` (binary units)."""
    expected = f"expected a size of at least {low} bytes (e.g. 1G, 512M, 64K)"

    def convert(value: str) -> int:
        match = _SIZE_RE.fullmatch(value.strip())
        if match is None:
            raise cv.Invalid(expected)
        result = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
        if result < low:
            raise cv.Invalid(expected)
        return result

    return convert


_FIELDS: Final[Fields] = {
    "enabled": ("enabled", cv.boolean),
    "stream": ("stream", cv.nats_name),
    "max_age": ("max_age", cv.time(1)),
    "max_bytes": ("max_bytes", size(MIB)),
    "duplicate_window": ("duplicate_window", cv.time(1, 86400)),
    "spool_max_bytes": ("spool_max_bytes", size(64 << 10)),
    "drop_when_full": ("drop_when_full", cv.boolean),
    "max_eps_per_agent": ("max_eps_per_agent", cv.number(0, 1e9)),
    "analysisd_socket": ("analysisd_socket", cv.nonempty),
}


def read_agent_events(reader: SectionReader, nodes: list[Node]) -> AgentEventsConfig:
    values = Values()
    for node in nodes:
        reader.read(node, "<nats><agent_events>", _FIELDS, values)
    return AgentEventsConfig(**values.kwargs)
