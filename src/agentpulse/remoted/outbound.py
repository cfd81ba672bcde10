"""`Outbound`: every message remoted sends to an agent, sealed with this process's one sender counter.

A reply goes where the agent is bound now (its TCP session, or its UDP peer), in the cipher it last
spoke; `send_direct` answers a connection that is not bound yet (a challenge of the replay rule). A reply
a full connection cannot take is counted, not waited for: the keep-alive ack never waits on anything.
"""

from __future__ import annotations

import random

from agentpulse.remoted.bindings import Bindings
from agentpulse.remoted.keystore import AgentEntry, KeyStore
from agentpulse.remoted.session import Session, UdpEndpoint, UdpPeer
from agentpulse.remoted.stats import RemotedStats
from agentpulse.wire.counters import SenderCounter
from agentpulse.wire.secure import CipherKind, compress_stored


class Outbound:
    def __init__(self, keys: KeyStore, bindings: Bindings, stats: RemotedStats) -> None:
        self.keys = keys
        self.bindings = bindings
        self.stats = stats
        self.sender = SenderCounter()
        self.udp: UdpEndpoint | None = None  # set once the datagram socket is bound

    def seal(self, entry: AgentEntry, payload: bytes, cipher: CipherKind | None = None) -> bytes:
        """A message for the agent, encrypted as its replies are (also for senders that batch, pushes.py)."""
        global_counter, local_counter = self.sender.advance()
        return entry.cipher.seal(
            payload,
            cipher=cipher or entry.reply_cipher,
            rand=random.getrandbits(16),
            global_counter=global_counter,
            local_counter=local_counter,
            compressor=compress_stored,
        )

    def reply(self, entry: AgentEntry, payload: bytes) -> None:
        """To wherever the agent is bound now."""
        session = self.bindings.session_of(entry.number)
        if session is not None:
            if not session.send(self.seal(entry, payload)):
                self.stats.replies_dropped += 1
            return
        udp_peer = self.bindings.udp_peer_of(entry.number)
        if udp_peer is not None and self.udp is not None:
            self.udp.send(self.seal(entry, payload), udp_peer)

    def send_direct(
        self,
        entry: AgentEntry,
        payload: bytes,
        session: Session | None,
        udp_peer: UdpPeer | None,
        cipher: CipherKind,
    ) -> None:
        """To this connection, bound or not, in the cipher it spoke."""
        if session is not None:
            session.send(self.seal(entry, payload, cipher))
        elif udp_peer is not None and self.udp is not None:
            self.udp.send(self.seal(entry, payload, cipher), udp_peer)

    def send_on(self, session: Session, entry: AgentEntry, payload: bytes) -> bool:
        """Encrypt a message for the agent bound to this session and queue it; False when dropped."""
        if session.send(self.seal(entry, payload)):
            return True
        self.stats.replies_dropped += 1
        return False

    def send_to_agent(self, agent_id: int, payload: bytes) -> bool:
        """A control message (probe, force_reconnect) to a connected agent; False when it is not here."""
        entry = self.keys.entries.get(agent_id)
        if entry is None:
            return False
        if self.bindings.session_of(agent_id) is None and self.bindings.udp_peer_of(agent_id) is None:
            return False
        self.reply(entry, payload)
        return True

    def send_plain(self, payload: bytes, session: Session | None, udp_peer: UdpPeer | None) -> None:
        """Unencrypted (the `#pong` to a `#ping`)."""
        if session is not None:
            session.send(payload)
        elif udp_peer is not None and self.udp is not None:
            self.udp.send(payload, udp_peer)
