"""Free loopback ports for the servers the tests start, picked below the kernel's ephemeral range.

A port from `bind(0)` comes from the ephemeral range, the one the kernel also gives every outgoing
connection as its local port. Between the pick and the server's own bind, one of the suite's thousands
of agent connections (in any xdist worker) can take it: CI saw a manager fail to start with "Address
already in use" that way, and the test it broke leaked a running node into the next tests. Ports below
the range are never handed to connections; each xdist worker walks a slice of its own, so two workers
never pick the same port, and one worker does not pick a port again until its slice wraps.
"""

from __future__ import annotations

import itertools
import os
import random
import socket
from pathlib import Path
from typing import Final

LOOPBACK: Final = "127.0.0.1"
LOWEST: Final = 12000  # clear of the well-known and registered ports most daemons use
RANGE_FILE: Final = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL_LOW: Final = 32768


def ephemeral_low() -> int:
    try:
        return int(RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_EPHEMERAL_LOW


def worker_slice() -> range:
    """This xdist worker's ports: gwN of M gets the Nth of M equal slices (all of them without xdist)."""
    high = ephemeral_low()
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or "1")
    index = int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else 0
    size = max((high - LOWEST) // max(count, 1), 1)
    start = LOWEST + (index % max(count, 1)) * size
    return range(start, min(start + size, high))


def _bindable(port: int) -> bool:
    """Free for TCP and UDP both (a manager may listen on both at one port)."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            if kind == socket.SOCK_STREAM:  # as our servers bind: a closed connection's TIME_WAIT is no owner
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                return False
    return True


_SLICE: Final = worker_slice()
_NEXT: Final = itertools.cycle(
    itertools.chain(_SLICE[(offset := random.randrange(len(_SLICE))) :], _SLICE[:offset])
)


def free_port() -> int:
    """The next port of this worker's slice that nothing holds now (TCP and UDP)."""
    for _ in range(len(_SLICE)):
        port = next(_NEXT)
        if _bindable(port):
            return port
    raise RuntimeError(f"no free port in {_SLICE.start}-{_SLICE.stop - 1}")
