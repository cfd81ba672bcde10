"""Counters that went back: a startup whose counters are not newer than the agent's highest, on a new
connection while no other holds the agent. A reinstalled agent (its sender_counter deleted) looks like
that, and so does a replayed capture. The startup is acked, then the agent is asked
`#!-req <random> agent getstate`, which every 4.x agent answers (reference 4.3) and no capture can:
only the answer makes the connection the agent's current one. Until then it changes no status; a
challenge not answered within `CHALLENGE_TIMEOUT` closes the connection.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentpulse.remoted.session import Session, UdpPeer
from agentpulse.wire.control import Keepalive

CHALLENGE_TIMEOUT = 10.0  # seconds; an agent answers a getstate request at once


@dataclass(eq=False, slots=True)
class Challenge:
    agent_id: int
    counter: str  # the request's counter: the answer must carry it
    seq: int  # the startup's counter, where the agent's new count starts
    session: Session | None
    udp_peer: UdpPeer | None
    deadline: float  # monotonic
    keepalive: Keepalive | None = None  # the last keep-alive sent meanwhile: it counts once answered


ChallengeKey = Session | tuple[int, UdpPeer | None]


def challenge_key(agent_id: int, session: Session | None, udp_peer: UdpPeer | None) -> ChallengeKey:
    return session if session is not None else (agent_id, udp_peer)


class Challenges:
    """The challenges waiting for an answer, one per connection (a replayer's many connections cannot
    push out the real agent's)."""

    def __init__(self) -> None:
        self._waiting: dict[ChallengeKey, Challenge] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def get(self, agent_id: int, session: Session | None, udp_peer: UdpPeer | None) -> Challenge | None:
        if not self._waiting:
            return None
        challenge = self._waiting.get(challenge_key(agent_id, session, udp_peer))
        return challenge if challenge is not None and challenge.agent_id == agent_id else None

    def start(self, challenge: Challenge) -> None:
        self._waiting[challenge_key(challenge.agent_id, challenge.session, challenge.udp_peer)] = challenge

    def done(self, challenge: Challenge) -> None:
        self._waiting.pop(challenge_key(challenge.agent_id, challenge.session, challenge.udp_peer), None)

    def session_closed(self, session: Session) -> None:
        if self._waiting:
            self._waiting.pop(session, None)

    def expired(self, now: float) -> list[Challenge]:
        """Take out and return the challenges past their deadline."""
        late = [challenge for challenge in self._waiting.values() if challenge.deadline <= now]
        for challenge in late:
            self.done(challenge)
        return late
