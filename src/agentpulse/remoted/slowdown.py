"""TEST ONLY: an artificially slow remoted, to test overload on a machine that is not overloaded.

`AGENTPULSE_TEST_SLOWDOWN_MS=<ms>` in the environment of the manager (its workers inherit it) makes every
message this process handles block its loop that long (a sleep: it costs no CPU, unlike a slow machine).
Unset (the default), nothing is changed and the hot path pays nothing: the dispatcher's `handle` is only
wrapped when the variable is set. Never set it in production; the manager logs a warning when it is.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agentpulse.remoted.server import Remoted
    from agentpulse.remoted.session import Session, UdpPeer

log = logging.getLogger(__name__)

ENV = "AGENTPULSE_TEST_SLOWDOWN_MS"


def apply(remoted: Remoted) -> float:
    """Slow `remoted.handle` down as the environment says; returns the delay per message (s), 0 if none."""
    try:
        delay = float(os.environ.get(ENV, "") or 0) / 1000
    except ValueError:
        delay = 0.0
    if delay <= 0:
        return 0.0
    handle = remoted.handle

    def slowed(data: bytes, peer_ip: str, session: Session | None, udp_peer: UdpPeer | None = None) -> None:
        time.sleep(delay)
        handle(data, peer_ip, session, udp_peer)

    setattr(remoted, "handle", slowed)  # noqa: B010 - an instance attribute over the method, on purpose
    log.warning("TEST ONLY: %s set: every message blocks the loop %.1f ms", ENV, delay * 1000)
    return delay
