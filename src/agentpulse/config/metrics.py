"""`<metrics>`: the standalone Prometheus listener (agentpulse's own section; Wazuh has none).

Off by default. When on, the manager serves `GET /metrics` on `<host>:<port>` without authentication,
so the default address is the loopback: expose it wider only on a network you trust (or behind the
HTTP API, which serves the same text at its own `/metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from agentpulse.config import convert as cv
from agentpulse.config.sections import Fields, SectionReader, Values
from agentpulse.config.xmltree import Node

__all__ = ["DEFAULT_METRICS_PORT", "MetricsConfig", "read_metrics"]

DEFAULT_METRICS_PORT: Final = 9717


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = DEFAULT_METRICS_PORT  # 0: any free port (the tests), logged when listening


_METRICS_FIELDS: Final[Fields] = {
    "enabled": ("enabled", cv.boolean),
    "host": ("host", cv.ip_address),
    "port": ("port", cv.integer(0, 65535)),
}


def read_metrics(nodes: list[Node], source: str) -> MetricsConfig:
    """The `<metrics>` sections of a file, merged in order; the defaults without one."""
    reader = SectionReader(source)
    values = Values()
    for node in nodes:
        reader.read(node, "<metrics>", _METRICS_FIELDS, values)
    return MetricsConfig(**values.kwargs)
