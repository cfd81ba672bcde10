"""JetStream facts both publishers rely on (status events in `events`, agent events in `ingest`): a
replicated stream's leader, streams an operator made with other replicas than ours, and a stream's health
as `agentpulse cluster status`, the metrics and the API show it (`StreamHealth`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from nats.js import JetStreamContext
from nats.js.api import StreamInfo

log = logging.getLogger(__name__)

LEADER_WAIT: Final = 10.0  # seconds a setup waits for a replicated stream's (or bucket's) leader


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


async def await_leaders(js: JetStreamContext, streams: Iterable[str], timeout: float = LEADER_WAIT) -> None:
    """`has_leader` for each; one that has none in time is said, and its publishes retry as after any outage."""
    for name in streams:
        if not await has_leader(js, name, timeout):
            log.info("JetStream stream %s has no leader yet; publishing will retry", name)


def note_replicas(noted: set[str], what: str, existing: int | None, wanted: int) -> None:
    """An existing stream or bucket keeps its replicas (changing them is the NATS operator's call): say so,
    once per `what` (`noted` remembers)."""
    if (existing or 1) != wanted and what not in noted:
        noted.add(what)
        log.warning(
            "JetStream %s has %d replicas, <nats><replicas> asks for %d: kept as it is "
            "(change it with `nats stream edit --replicas`)",
            what,
            existing or 1,
            wanted,
        )


@dataclass(frozen=True, slots=True)
class StreamHealth:
    """One stream as its leader reports it: the replicas asked for, who leads, which replicas are current."""

    name: str
    replicas: int
    leader: str | None  # None: not clustered, or electing one now
    peers: dict[str, bool]  # server name -> current (the leader is); empty when not clustered
    messages: int

    @property
    def current(self) -> int:
        """Replicas holding every message now: a stream on one server (not clustered) is its own copy."""
        if not self.peers:
            return 1 if self.replicas == 1 else 0
        return sum(self.peers.values())

    @property
    def degraded(self) -> bool:
        """Fewer current copies than asked for, or no leader: one more loss may stop or lose writes."""
        return self.current < self.replicas or (bool(self.peers) and self.leader is None)

    def lagging(self) -> list[str]:
        """The replicas that are behind or offline."""
        return sorted(name for name, current in self.peers.items() if not current)


def stream_health(info: StreamInfo) -> StreamHealth:
    cluster = info.cluster
    peers: dict[str, bool] = {}
    leader = None
    if cluster is not None:
        leader = cluster.leader or None
        if leader:
            peers[leader] = True
        for peer in cluster.replicas or []:
            if peer.name:
                peers[peer.name] = bool(peer.current) and not peer.offline
    return StreamHealth(
        info.config.name or "", info.config.num_replicas or 1, leader, peers, info.state.messages
    )
