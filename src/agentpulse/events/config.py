"""`ConfigPublisher`: `<prefix>.config.<id>` when an agent's group_config_status changes (docs/events.md).

The store tells it each change on the loop (a cheap append); a batch goes out on core NATS every
CONFIG_INTERVAL. At-most-once, like keep-alive events: global.db keeps the current value (and
`agentpulse group status` counts it), so a consumer that missed one reads it there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from nats.errors import Error as NatsError

from agentpulse.events import payloads
from agentpulse.events.publisher import NatsLink

log = logging.getLogger(__name__)

CONFIG_INTERVAL: Final = 0.2
CONFIG_BUFFER_MAX: Final = 200_000  # a rollout to a whole fleet at once, and then some


class ConfigPublisher:
    def __init__(
        self,
        link: NatsLink,
        *,
        prefix: str,
        origin: payloads.Origin,
        name_of: Callable[[int], str | None],
        interval: float = CONFIG_INTERVAL,
    ) -> None:
        self.link = link
        self.prefix = prefix
        self.origin = origin
        self.name_of = name_of
        self.interval = interval
        self.published = self.dropped = 0
        self._buffer: list[tuple[int, str, float]] = []

    def on_config_status(self, agent_id: int, status: str, at: float) -> None:
        if len(self._buffer) >= CONFIG_BUFFER_MAX:
            self.dropped += 1
            return
        self._buffer.append((agent_id, status, at))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except Exception:
                log.exception("config events publisher failed; going on")

    async def flush(self) -> None:
        batch, self._buffer = self._buffer, []
        if not batch:
            return
        if not self.link.nc.is_connected:
            self.dropped += len(batch)
            return
        sent = 0
        try:
            for agent_id, status, at in batch:
                body = payloads.config_event(agent_id, status, at, self.name_of(agent_id), self.origin)
                await self.link.nc.publish(payloads.config_subject(self.prefix, agent_id), body)
                sent += 1
            # No flush with a timeout here: nats-py cancels the PONG's future when the timeout runs out, and
            # the late PONG then kills the client's read loop (InvalidStateError, nats-py issue 624): seen
            # in the 200,000-agent run. The client's own flusher writes what publish() buffered.
        except (NatsError, OSError, TimeoutError):
            self.dropped += len(batch) - sent
        self.published += sent
