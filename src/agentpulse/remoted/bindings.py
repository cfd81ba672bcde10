"""Which connection carries which agent in this process: agent -> TCP session and agent -> UDP peer.

The one owner of that state: sessions and key entries both ask here. Every change is reported to the grace
tracker (`GraceEvents`); a closed session's `CloseReason` says whether it lost its agent's connection or
let it go. The overtake rule (`connection_overtake_time`, docs/protocol.md) lives here too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from agentpulse.remoted.grace import GraceEvents
from agentpulse.remoted.session import CloseReason, Session, UdpPeer
from agentpulse.wire.errors import Reason, WireError

log = logging.getLogger(__name__)


class Bindings:
    """agent -> TCP session and agent -> UDP peer, for this process.

    Sessions do not know their agent and key entries do not know their session: both ask here. Whether a
    closed session lost its agent's connection or let it go is read from its `CloseReason`, here and
    nowhere else. A live session keeps its agent's key (see `bind`).
    """

    def __init__(self, grace: GraceEvents, overtake_time: float, monotonic: Callable[[], float]) -> None:
        self.grace = grace
        self.overtake_time = overtake_time
        self.monotonic = monotonic
        self._sessions: dict[int, Session] = {}  # agent -> the TCP session it is bound to
        self._agents: dict[Session, int] = {}  # the same bindings, read from the session
        self._udp_peers: dict[int, UdpPeer] = {}  # where UDP replies go: the peer of the last control message

    def session_of(self, agent_id: int) -> Session | None:
        return self._sessions.get(agent_id)

    def agent_of(self, session: Session) -> int | None:
        return self._agents.get(session)

    def udp_peer_of(self, agent_id: int) -> UdpPeer | None:
        return self._udp_peers.get(agent_id)

    def __len__(self) -> int:
        return len(self._sessions)

    def agents(self) -> list[int]:
        """Every agent with a TCP session or a UDP peer here."""
        if not self._udp_peers:
            return list(self._sessions)
        return list(self._sessions.keys() | self._udp_peers.keys())

    def bind_udp(self, agent_id: int, peer: UdpPeer | None) -> None:
        if peer is None:
            self._udp_peers.pop(agent_id, None)
        else:
            self._udp_peers[agent_id] = peer

    def bind(self, agent_id: int, session: Session, key_id: str) -> None:
        """Tie the agent to this TCP session. An older live session keeps the key (KEY_IN_USE) unless it
        has been silent for longer than connection_overtake_time; then it is closed as OVERTAKEN."""
        current = self._sessions.get(agent_id)
        if current is session:
            return
        if current is not None:
            if not current.closed:
                idle = self.monotonic() - current.last_received
                if idle <= self.overtake_time:
                    raise WireError(Reason.KEY_IN_USE, f"agent {key_id} is connected on another socket")
                log.info("Agent %s: connection overtaken after %.0f s of silence", key_id, idle)
                current.close(CloseReason.OVERTAKEN)
            # The old session's connection_lost, now or later, is no longer this agent's.
            del self._agents[current]
        self._sessions[agent_id] = session
        self._agents[session] = agent_id
        self.grace.bound(agent_id)

    def unbind(self, session: Session, reason: CloseReason) -> None:
        """The session's connection is gone: its agent (if still bound to it) lost it or was let go."""
        agent_id = self._agents.pop(session, None)
        if agent_id is None:
            return
        del self._sessions[agent_id]
        self._let_go(agent_id, reason)

    def drop(self, agent_id: int) -> None:
        """The agent's key is gone or changed: its connection closes and its UDP peer is forgotten."""
        self._udp_peers.pop(agent_id, None)
        session = self._sessions.pop(agent_id, None)
        if session is not None:
            del self._agents[session]
            session.close(CloseReason.KEY_REMOVED)
        self._let_go(agent_id, CloseReason.KEY_REMOVED)

    def _let_go(self, agent_id: int, reason: CloseReason) -> None:
        if reason.loses_connection:
            self.grace.closed(agent_id)
        else:
            self.grace.released(agent_id)
