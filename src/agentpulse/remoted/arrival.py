"""A message on a connection that is not its agent's current one (a new connection, from any address, on
any worker): whether it may start using the agent, reference 3.3-3.4 made strict (docs/security.md).

`Arrivals.first()` asks the replay guard (`replay.py`) for a verdict: at once when this process holds
the agent or is the only one, else the connection waits for the manager's answer. Admitted, the message
is handled as any other; counters that went back earn a challenge (`challenge.py`). The danger is
letting a refused message touch the agent's state: nothing here writes a status, a counter or the reply
cipher before the verdict.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentpulse.records import StatusUpdate
from agentpulse.remoted.challenge import CHALLENGE_TIMEOUT, Challenge, Challenges
from agentpulse.remoted.keystore import AgentEntry
from agentpulse.remoted.replay import Answer, ReplayGuard
from agentpulse.remoted.session import CloseReason, Session, UdpPeer
from agentpulse.status import Trigger
from agentpulse.wire import control
from agentpulse.wire.counters import Holder, Verdict, first_message_verdict, pair_text
from agentpulse.wire.errors import Reason, WireError
from agentpulse.wire.secure import CipherKind

if TYPE_CHECKING:
    from agentpulse.remoted.server import Remoted

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Arrival:
    """One message waiting for its verdict, with where it came from."""

    entry: AgentEntry
    seq: int
    parsed: control.FromAgent
    cipher: CipherKind  # the method it came in: replies use it once it is accepted
    session: Session | None
    udp_peer: UdpPeer | None

    @property
    def peer_ip(self) -> str:
        if self.session is not None:
            return self.session.peer_ip
        return self.udp_peer[0] if self.udp_peer is not None else ""


class Arrivals:
    def __init__(self, remoted: Remoted, replay: ReplayGuard) -> None:
        self.remoted = remoted
        self.replay = replay
        self.challenges = Challenges()

    def first(self, arrival: Arrival) -> None:
        """Raises WireError when refused at once; a connection that waits is held (`Session.hold`)."""
        entry, session, udp_peer = arrival.entry, arrival.session, arrival.udp_peer
        challenge = self.challenges.get(entry.number, session, udp_peer)
        if challenge is not None:
            self._during_challenge(challenge, arrival)
            return
        startup = isinstance(arrival.parsed, control.Startup)
        highest = entry.received.highest
        held_here = self.remoted.bindings.session_of(entry.number)
        answer: Answer | None
        if held_here is not None:  # this process holds the agent: it knows the agent's latest counter
            idle = self.remoted.monotonic() - held_here.last_received
            holder = Holder.LIVE if idle <= self.remoted.bindings.overtake_time else Holder.STALE
            strict = self.remoted.remote.verify_msg_id
            verdict = first_message_verdict(
                highest=highest, seq=arrival.seq, startup=startup, holder=holder, strict=strict
            )
            answer = (verdict, highest)
        else:
            answer = self.replay.decide(entry.number, arrival.seq, startup, highest)
        if answer is not None:
            self._admitted(arrival, answer)
            return
        if session is not None:
            session.hold()
        self.replay.ask(
            entry.number, arrival.seq, startup, highest, lambda answer: self._answered(arrival, answer)
        )

    def _answered(self, arrival: Arrival, answer: Answer | None) -> None:
        """The manager's answer (a worker): go on with the connection that waited for it, or close it."""
        entry, session = arrival.entry, arrival.session
        admitted = answer is not None and answer[0] is Verdict.ADMIT
        if (session is not None and session.closed) or self.remoted.keys.entries.get(
            entry.number
        ) is not entry:
            if admitted:
                self.replay.unadmitted(entry.number)
            if session is not None:
                session.close(CloseReason.KEY_REMOVED)
            return
        try:
            if answer is None:
                raise WireError(Reason.NO_ADMISSION, f"agent {entry.key.id}: the manager did not answer")
            self._admitted(arrival, answer)
        except WireError as error:
            self.remoted.refused(error, arrival.peer_ip, session)
            if session is not None:
                session.close(CloseReason.REFUSED)
            if admitted and self.remoted.bindings.session_of(entry.number) is None:
                self.replay.unadmitted(entry.number)
            return
        if session is not None:
            session.resume()

    def _admitted(self, arrival: Arrival, answer: Answer) -> None:
        verdict, highest = answer
        entry, parsed = arrival.entry, arrival.parsed
        counter = entry.received
        counter.highest = max(counter.highest, highest)
        if verdict is Verdict.ADMIT:
            counter.restart(arrival.seq)
            entry.reply_cipher = arrival.cipher
            if not isinstance(parsed, control.Shutdown):  # as in Wazuh, a shutdown binds nothing
                self.remoted.bind(entry, arrival.session, arrival.udp_peer)
            self.remoted.dispatch(entry, arrival.seq, parsed, arrival.session, arrival.udp_peer)
        elif verdict is Verdict.CHALLENGE:
            assert isinstance(parsed, control.Startup)
            self._challenge(arrival, parsed)
        elif verdict is Verdict.KEY_IN_USE:
            raise WireError(Reason.KEY_IN_USE, f"agent {entry.key.id} is connected on another socket")
        else:
            raise WireError(
                Reason.REPLAYED_COUNTER,
                f"agent {entry.key.id} sent {pair_text(arrival.seq)} on a new connection, "
                f"not newer than {pair_text(counter.highest)}",
            )

    def _send(self, arrival: Arrival, payload: bytes) -> None:
        self.remoted.outbound.send_direct(
            arrival.entry, payload, arrival.session, arrival.udp_peer, arrival.cipher
        )

    def _challenge(self, arrival: Arrival, startup: control.Startup) -> None:
        """Ack the startup, then ask the agent something only a live agent can answer (challenge.py)."""
        entry = arrival.entry
        refusal = self.remoted.version_refusal(startup)
        if refusal is not None:  # refused anyway; whether it was the agent is unknown: no status
            self._send(arrival, control.build_error(refusal[1]))
            return
        counter = f"{random.getrandbits(32):x}"
        self._send(arrival, control.ACK)
        self._send(arrival, control.build_request(counter, control.AGENT_TARGET, control.GETSTATE))
        deadline = self.remoted.monotonic() + CHALLENGE_TIMEOUT
        self.challenges.start(
            Challenge(entry.number, counter, arrival.seq, arrival.session, arrival.udp_peer, deadline)
        )
        self.remoted.warn.warning(
            f"challenge:{entry.number}",
            "Agent %s (%s): startup counter %s is not newer than %s (reinstalled, or a replay): "
            "asking it to prove it is live",
            entry.key.id,
            entry.key.name,
            pair_text(arrival.seq),
            pair_text(entry.received.highest),
        )

    def _during_challenge(self, challenge: Challenge, arrival: Arrival) -> None:
        """A message on a challenged connection: the answer makes it current; the rest changes nothing."""
        entry, parsed = arrival.entry, arrival.parsed
        if isinstance(parsed, control.Keepalive):
            challenge.keepalive = parsed
            self._send(arrival, control.ACK)
            return
        if not isinstance(parsed, control.RequestReply) or parsed.counter != challenge.counter:
            return
        self.challenges.done(challenge)
        self.remoted.bind(entry, challenge.session, challenge.udp_peer)
        entry.received.restart(challenge.seq)
        entry.received.note(arrival.seq)
        entry.reply_cipher = arrival.cipher
        log.info("Agent %s (%s) answered: its counters were reset; accepted", entry.key.id, entry.key.name)
        now = self.remoted.clock()
        journal = self.remoted.journal
        if journal is not None:  # its startup was acked before the answer: it counts from now
            journal.record(entry.number, Trigger.STARTUP, now)
            entry.journaled = True
        self.remoted.store.submit(StatusUpdate(entry.number, Trigger.STARTUP, now))
        if challenge.keepalive is not None:
            keepalive = challenge.keepalive
            self.remoted.store.submit(StatusUpdate(entry.number, Trigger.ALIVE, now, keepalive=keepalive))

    def expire_challenges(self) -> None:
        for challenge in self.challenges.expired(self.remoted.monotonic()):
            if challenge.session is not None:
                challenge.session.close(CloseReason.REFUSED)  # never bound: no grace, no status
            self.remoted.warn.warning(
                f"challenge-lost:{challenge.agent_id}",
                "Agent %s: no answer to the challenge in %.0f s; connection closed, nothing recorded",
                f"{challenge.agent_id:03d}",
                CHALLENGE_TIMEOUT,
            )
