"""JetStream facts both publishers rely on (status events in `events`, agent events in `ingest`)."""

from __future__ import annotations

import asyncio
import time

from nats.js import JetStreamContext


async def has_leader(js: JetStreamContext, stream: str, timeout: float) -> bool:
    """Until the stream has a leader (or is not clustered); False after `timeout`. A replicated stream just
    created, or one whose servers restarted, elects it a moment later, and until then every publish to it
    gets no responder: the first batch would fail and wait out a back-off for nothing."""
    deadline = time.monotonic() + timeout
    while True:
        info = await js.stream_info(stream)
        if info.cluster is None or info.cluster.leader:
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.1)
