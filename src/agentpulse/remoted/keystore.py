"""The agents remoted accepts: client.keys in memory, found by id and source IP, with each agent's
prepared cipher and receive counter.

A reload keeps the entry (cipher contexts, counters) of every agent whose line did not change, so
re-reading a keys file of 100,000 agents rebuilds only what changed. Which connection an agent is on is
not kept here (see `bindings.py`). The manager reads names here even when workers hold the connections.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from agentpulse.wire.control import Keepalive
from agentpulse.wire.counters import ReceiverCounter
from agentpulse.wire.errors import Reason, WireError
from agentpulse.wire.keys import AgentKey, KeysFile, parse_line, single_host_address
from agentpulse.wire.secure import AgentCipher, CipherKind

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class AgentEntry:
    key: AgentKey
    cipher: AgentCipher
    received: ReceiverCounter = field(default_factory=ReceiverCounter)
    reported: int = 0  # `received.current` when last reported to the manager (several workers)
    reply_cipher: CipherKind = CipherKind.AES  # replies use the method of the agent's last message
    # An agent repeats the same keep-alive text for hours: parse it once, and hand the store the same
    # object, so it can tell "nothing changed" by identity.
    last_keepalive_text: bytes = b""
    last_keepalive: Keepalive | None = None
    journaled: bool = False  # this process wrote an acknowledgement of it to the journal

    @property
    def number(self) -> int:
        return self.key.number


@dataclass(frozen=True, slots=True)
class Departures:
    """What a change of keys ends: all the connections side needs of it."""

    dropped: list[AgentEntry]  # the live entries of removed or changed lines
    gone: list[AgentKey]  # removed ids that are not in the file any more (not just changed)


@dataclass(frozen=True, slots=True)
class KeysChange(Departures):
    added: list[AgentKey]  # new ids, or lines that changed (new key or name)
    removed: list[AgentKey]  # ids gone, or lines that changed


@dataclass(frozen=True, slots=True)
class AcceptedLines:
    """client.keys lines another key store accepted (`KeyStore.lines`), indexed without parsing one."""

    lines: dict[int, str]
    by_ip: dict[str, int]

    @classmethod
    def index(cls, text: str) -> AcceptedLines:
        """Lines of the form `KeyStore.lines` holds (canonical, active, validated), one per line."""
        lines: dict[int, str] = {}
        by_ip: dict[str, int] = {}
        for line in text.splitlines():
            if not line:
                continue
            head, _, rest = line.partition(" ")
            number = int(head)
            lines[number] = line
            address = single_host_address(rest.split(" ", 2)[1])
            if address is not None:
                by_ip[address] = number
        return cls(lines, by_ip)


class KeyStore:
    """Every key of client.keys, and an entry (ciphers, counters) for each agent that has talked
    to this process. Keys are kept as their line of text and parsed on first contact, and entries are
    made then too: with several workers, each holds the whole keys file, and 200,000 parsed keys (or
    cipher contexts) per process would cost more than the connections themselves."""

    def __init__(self) -> None:
        self.lines: dict[int, str] = {}
        self.entries: dict[int, AgentEntry] = {}
        self.by_ip: dict[str, int] = {}  # single-host IPv4 keys, by the exact address text

    def __len__(self) -> int:
        return len(self.lines)

    def __contains__(self, number: int) -> bool:
        return number in self.lines

    def key(self, number: int) -> AgentKey | None:
        line = self.lines.get(number)
        return parse_line(line) if line is not None else None

    def name_of(self, number: int) -> str | None:
        line = self.lines.get(number)
        return line.split(" ", 2)[1] if line is not None else None

    def load(self, keys: KeysFile) -> KeysChange:
        """Take a new client.keys; the change says whose entries (and so connections) must go."""
        for problem in keys.problems:
            log.warning("client.keys line %d ignored: %s", problem.line_no, problem.reason)
        old = self.lines
        active = list(keys.active())
        fresh = {key.number: key.line() for key in active}
        added = [key for key in active if old.get(key.number) != fresh[key.number]]
        removed, departures = self._replace(
            fresh, {key.ip.lookup_text: key.number for key in active if key.ip.single_host}
        )
        return KeysChange(dropped=departures.dropped, gone=departures.gone, added=added, removed=removed)

    def take_accepted(self, accepted: AcceptedLines) -> Departures:
        """Take the lines the manager's key store accepted (a worker's keys): no line is parsed but
        those of agents whose line changed or went, so a worker's start with 200,000 keys costs a
        dictionary, not 200,000 validations (0.7 s of CPU in each of 12 workers)."""
        return self._replace(accepted.lines, accepted.by_ip)[1]

    def _replace(self, fresh: dict[int, str], by_ip: dict[str, int]) -> tuple[list[AgentKey], Departures]:
        """The new lines and address index in place of the old: the keys of lines removed or changed (only
        those are parsed), and what that ends."""
        removed = [
            key
            for number, line in self.lines.items()
            if fresh.get(number) != line and (key := parse_line(line)) is not None
        ]
        dropped = [entry for key in removed if (entry := self.entries.pop(key.number, None)) is not None]
        self.lines = fresh
        self.by_ip = by_ip
        return removed, Departures(dropped, [key for key in removed if key.number not in fresh])

    def apply_lines(self, lines: list[str]) -> KeysChange:
        """Take some client.keys lines without re-reading the file (enrolment's new and replaced agents):
        an active line adds or changes its agent, a removed one (`<id> !<name> ...`) removes it."""
        added: list[AgentKey] = []
        removed: list[AgentKey] = []
        gone: list[AgentKey] = []
        for text in lines:
            key = parse_line(text)
            if key is None:
                continue
            old_line = self.lines.get(key.number)
            old = parse_line(old_line) if old_line is not None else None
            if key.removed:
                if old is not None:
                    del self.lines[key.number]
                    removed.append(old)
                    gone.append(old)
                continue
            if old_line == key.line():
                continue
            if old is not None:
                removed.append(old)
            self.lines[key.number] = key.line()
            added.append(key)
        dropped = [entry for key in removed if (entry := self.entries.pop(key.number, None)) is not None]
        for key in removed:
            if self.by_ip.get(key.ip.lookup_text) == key.number:
                del self.by_ip[key.ip.lookup_text]
        for key in added:
            if key.ip.single_host:
                self.by_ip[key.ip.lookup_text] = key.number
        return KeysChange(dropped=dropped, gone=gone, added=added, removed=removed)

    def find(self, agent_id: str | None, source_ip: str) -> AgentEntry:
        """By `!<id>!` prefix (the source must be inside the entry's range) or by exact source IP."""
        if agent_id is None:
            number = self.by_ip.get(source_ip)
            if number is None:
                raise WireError(Reason.UNKNOWN_AGENT, f"message from '{source_ip}' not allowed")
            return self._entry(number)
        number = int(agent_id)
        entry = self.entries.get(number)
        key = entry.key if entry is not None else self.key(number)
        if key is None:
            raise WireError(Reason.UNKNOWN_AGENT, f"invalid id {agent_id} for source ip '{source_ip}'")
        if not key.ip.allows(source_ip):
            raise WireError(Reason.IP_NOT_ALLOWED, f"agent {agent_id} may not send from '{source_ip}'")
        return entry if entry is not None else self._entry(number, key)

    def _entry(self, number: int, key: AgentKey | None = None) -> AgentEntry:
        entry = self.entries.get(number)
        if entry is None:
            key = key or self.key(number)
            assert key is not None  # callers looked it up
            entry = AgentEntry(key, AgentCipher.for_key(key.id, key.name, key.key))
            self.entries[number] = entry
        return entry
