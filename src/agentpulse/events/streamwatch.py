"""`StreamWatch`: the JetStream streams agentpulse writes, read back every `INTERVAL` on the manager's NATS
connection, so that a replication that is degraded shows before the next failure loses what it holds.

The danger is a replicated stream that lost a copy (a server down, a replica behind): writes still succeed,
nothing looks wrong, and the next loss stops them or takes messages with it. Each stream's health (the
replicas asked for, how many are current, its leader) goes to the metrics and to `GET /manager/status`,
and a change between healthy and degraded is one log line, not one per check. After each read the same
report goes to `var/run/agentpulse-streams.json` for `agentpulse status` (cli/streams_status.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

from agentpulse.events.publisher import NatsLink
from agentpulse.jetstream import StreamHealth, stream_health

log = logging.getLogger(__name__)

INTERVAL: Final = 10.0  # seconds between two reads of every stream
TIMEOUT: Final = 5.0  # one stream_info; a stream electing a leader may not answer
WAIT_FOR_LINK: Final = 1.0  # seconds between looks at a connection that is not up


class StreamWatch:
    def __init__(
        self,
        link: NatsLink,
        streams: Sequence[str],
        interval: float = INTERVAL,
        state_path: Path | None = None,
    ) -> None:
        self.link = link
        self.state_path = state_path
        self.streams = tuple(dict.fromkeys(streams))  # once each, in order
        self.interval = interval
        self.health: dict[str, StreamHealth] = {}  # the last read of each stream that could be read
        self.notes: dict[str, str] = {}  # why a stream has no health now
        self._degraded: dict[str, bool] = {}  # what was said last, per stream
        self.stopped = False

    async def run(self) -> None:
        while not self.stopped:
            if not self.link.up:  # not connected yet, or reconnecting: read soon after it is
                await asyncio.sleep(min(self.interval, WAIT_FOR_LINK))
                continue
            await self.check()
            if self.stopped:  # a cancellation nats-py swallowed during the read: the stop said so anyway
                return
            await asyncio.sleep(self.interval)

    async def check(self) -> None:
        """Read every stream once (bounded); say what changed."""
        for name in self.streams:
            js = self.link.js
            if js is None or not self.link.up:
                return
            try:
                info = await asyncio.wait_for(js.stream_info(name), TIMEOUT)
            except NotFoundError:
                self._unknown(name, "does not exist (it is created at the first publish)")
                continue
            except (NatsError, OSError, TimeoutError) as error:
                self._unknown(name, f"cannot be read: {str(error) or type(error).__name__}")
                continue
            self._known(stream_health(info))
        if self.state_path is not None:
            await asyncio.to_thread(self._write_state, self.state_path, self.report())

    @staticmethod
    def _write_state(path: Path, report: dict[str, object]) -> None:
        tmp = path.with_suffix(".tmp")
        with contextlib.suppress(OSError):  # status is best effort; the metrics and the log have it too
            tmp.write_text(json.dumps({"updated": time.time(), "streams": report}))
            os.replace(tmp, path)

    def _unknown(self, name: str, why: str) -> None:
        if self.health.pop(name, None) is not None:  # it was read before: a stream without a leader, say
            self._degraded[name] = True  # so that its recovery is said too
            log.warning(
                "JetStream stream %s %s; it was read before (no leader answering, or removed)", name, why
            )
        self.notes[name] = why

    def readable(self) -> dict[str, bool]:
        """Each stream read at least once so far: whether the last read worked (the metrics' 0/1)."""
        return {
            name: name in self.health for name in self.streams if name in self.health or name in self.notes
        }

    def _known(self, health: StreamHealth) -> None:
        name = health.name
        self.health[name] = health
        self.notes.pop(name, None)
        degraded = health.degraded
        if degraded == self._degraded.get(name, False):
            return
        self._degraded[name] = degraded
        if degraded:
            lagging = ", ".join(health.lagging()) or "none named"
            log.warning(
                "JetStream stream %s is degraded: %d of %d replicas current, leader %s, behind or offline: "
                "%s; writes go on, but another server lost may stop them",
                name,
                health.current,
                health.replicas,
                health.leader or "none (electing)",
                lagging,
            )
        else:
            log.info(
                "JetStream stream %s: all %d replicas current again (leader %s)",
                name,
                health.replicas,
                health.leader or "-",
            )

    def report(self) -> dict[str, object]:
        """Every watched stream, for `GET /manager/status`: its health, or why it has none."""
        shown: dict[str, object] = {}
        for name in self.streams:
            health = self.health.get(name)
            if health is None:
                shown[name] = {"error": self.notes.get(name, "not read yet")}
                continue
            shown[name] = {
                "replicas": health.replicas,
                "current": health.current,
                "degraded": health.degraded,
                "leader": health.leader,
                "peers": dict(sorted(health.peers.items())),
                "messages": health.messages,
            }
        return shown
