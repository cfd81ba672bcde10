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
    added: list[AgentKey]  # new ids, or lines that changed (new key or name)
    removed: list[AgentKey]  # ids gone, or lines that changed
    dropped: list[AgentEntry]  # the live entries of removed or changed lines


class KeyStore:
    """Every key of client.keys, and an entry (ciphers, counters, session) for each agent that has talked
    to this process. Entries are made on first contact: with several workers, each one would otherwise
    hold cipher contexts for every agent of the fleet."""

    def __init__(self) -> None:
        self.by_number: dict[int, AgentKey] = {}
        self.entries: dict[int, AgentEntry] = {}
        self.by_ip: dict[str, int] = {}  # single-host IPv4 keys, by the exact address text

    def __len__(self) -> int:
        return len(self.by_number)

    def load(self, keys: KeysFile) -> KeysChange:
        old = self.by_number
        fresh = {key.number: key for key in keys.active()}
        added = [key for number, key in fresh.items() if old.get(number) != key]
        removed = [key for number, key in old.items() if fresh.get(number) != key]
        dropped = [entry for key in removed if (entry := self.entries.pop(key.number, None)) is not None]
        self.by_number = fresh
        self.by_ip = {key.ip.lookup_text: key.number for key in fresh.values() if key.ip.single_host}
        return KeysChange(added, removed, dropped)

    def find(self, agent_id: str | None, source_ip: str) -> AgentEntry:
        """By `!<id>!` prefix (the source must be inside the entry's range) or by exact source IP."""
        if agent_id is None:
            number = self.by_ip.get(source_ip)
            if number is None:
                raise WireError(Reason.UNKNOWN_AGENT, f"message from '{source_ip}' not allowed")
            return self._entry(number)
        number = int(agent_id)
        key = self.by_number.get(number)
        if key is None:
            raise WireError(Reason.UNKNOWN_AGENT, f"invalid id {agent_id} for source ip '{source_ip}'")
        if not key.ip.allows(source_ip):
            raise WireError(Reason.IP_NOT_ALLOWED, f"agent {agent_id} may not send from '{source_ip}'")
        return self._entry(number)

    def _entry(self, number: int) -> AgentEntry:
        entry = self.entries.get(number)
        if entry is None:
            key = self.by_number[number]
            entry = AgentEntry(key, AgentCipher.for_key(key.id, key.name, key.key))
            self.entries[number] = entry
        return entry
