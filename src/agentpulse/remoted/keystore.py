"""The agents remoted accepts: client.keys in memory, with each agent's prepared cipher and counters.

A reload keeps the entry (cipher contexts, counters, session) of every agent whose line did not change, so
re-reading a keys file of 100,000 agents rebuilds only what changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agentpulse.wire.control import Keepalive
from agentpulse.wire.counters import ReceiverCounter
from agentpulse.wire.errors import Reason, WireError
from agentpulse.wire.keys import AgentKey, KeysFile
from agentpulse.wire.secure import AgentCipher, CipherKind

if TYPE_CHECKING:
    from agentpulse.remoted.session import Session


@dataclass(eq=False, slots=True)
class AgentEntry:
    key: AgentKey
    cipher: AgentCipher
    received: ReceiverCounter = field(default_factory=ReceiverCounter)
    reply_cipher: CipherKind = CipherKind.AES  # the method of the agent's last message (reference 2)
    session: Session | None = None  # the TCP session the agent is bound to
    udp_peer: tuple[str, int] | None = None  # where UDP replies go: the peer of the last control message
    # An agent repeats the same keep-alive text for hours: parse it once, and hand the store the same
    # object, so it can tell "nothing changed" by identity.
    last_keepalive_text: bytes = b""
    last_keepalive: Keepalive | None = None

    @property
    def number(self) -> int:
        return self.key.number


@dataclass(frozen=True, slots=True)
class KeysChange:
    added: list[AgentEntry]
    removed: list[AgentEntry]


class KeyStore:
    def __init__(self) -> None:
        self.by_number: dict[int, AgentEntry] = {}
        self.by_ip: dict[str, AgentEntry] = {}  # single-host IPv4 entries, by the exact address text

    def __len__(self) -> int:
        return len(self.by_number)

    def load(self, keys: KeysFile) -> KeysChange:
        old = self.by_number
        fresh: dict[int, AgentEntry] = {}
        added: list[AgentEntry] = []
        for key in keys.active():
            previous = old.get(key.number)
            if previous is not None and previous.key == key:
                fresh[key.number] = previous
                continue
            entry = AgentEntry(key, AgentCipher.for_key(key.id, key.name, key.key))
            fresh[key.number] = entry
            added.append(entry)
        removed = [entry for number, entry in old.items() if fresh.get(number) is not entry]
        self.by_number = fresh
        self.by_ip = {entry.key.ip.lookup_text: entry for entry in fresh.values() if entry.key.ip.single_host}
        return KeysChange(added, removed)

    def find(self, agent_id: str | None, source_ip: str) -> AgentEntry:
        """By `!<id>!` prefix (the source must be inside the entry's range) or by exact source IP."""
        if agent_id is None:
            entry = self.by_ip.get(source_ip)
            if entry is None:
                raise WireError(Reason.UNKNOWN_AGENT, f"message from '{source_ip}' not allowed")
            return entry
        entry = self.by_number.get(int(agent_id))
        if entry is None:
            raise WireError(Reason.UNKNOWN_AGENT, f"invalid id {agent_id} for source ip '{source_ip}'")
        if not entry.key.ip.allows(source_ip):
            raise WireError(Reason.IP_NOT_ALLOWED, f"agent {agent_id} may not send from '{source_ip}'")
        return entry
