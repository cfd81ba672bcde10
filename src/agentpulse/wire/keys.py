"""`client.keys`: reading, editing and writing it as Wazuh does, and deriving each agent's cipher keys.

A keys file is edited by people and by tools at once, so `KeysFile` keeps every line it does not touch
byte for byte: comments, removed entries and odd spacing survive an add or a remove. Parsing never raises
for one bad line; it records the problem and skips the line, as Wazuh's reader does, so a typo cannot lock
out the rest of the fleet.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

FIELD_MAX = 127  # each field is copied into a 128-byte buffer (KEYSIZE)
LINE_MAX = 2047  # lines are read with a 2048-byte buffer (OS_BUFFER_SIZE)
NAME_MIN, NAME_MAX = 2, FIELD_MAX  # Wazuh allows 128, but a 128-byte field does not fit KEYSIZE
ANY_IP = "any"
REMOVED_MARKS = ("!", "#")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def md5hex(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def encryption_key(agent_id: str, name: str, raw_key: str) -> str:
    """The 47-character key of the Wazuh 4.x protocol: md5(key) followed by 15 chars of md5(md5(name)+md5(id))."""
    name_id = md5hex(md5hex(name) + md5hex(agent_id))[:15]
    return md5hex(raw_key) + name_id


def aes_key(raw_key: str) -> bytes:
    """AES-256 uses the first 32 bytes of the encryption key: the ASCII of md5hex(raw key)."""
    return md5hex(raw_key).encode("ascii")


def blowfish_key(agent_id: str, name: str, raw_key: str) -> bytes:
    return encryption_key(agent_id, name, raw_key).encode("ascii")


def generate_key() -> str:
    """A new raw key shaped like Wazuh's: two MD5 hex digests (64 lowercase hex characters)."""
    return md5hex(secrets.token_bytes(32)) + md5hex(secrets.token_bytes(32))


@dataclass(frozen=True, slots=True)
class IpRange:
    """The ip field of a keys line: `any`, one IPv4 host, an IPv4 network or any IPv6 text."""

    text: str
    network: Network | None  # None means `any`
    negated: bool = False

    @property
    def single_host(self) -> bool:
        """Wazuh's isSingleHost(): only a plain IPv4 address. Such agents send no `!id!` prefix."""
        return (
            self.network is not None
            and not self.negated
            and self.network.version == 4
            and self.network.prefixlen == 32
        )

    def allows(self, source_ip: str) -> bool:
        if self.network is None:
            return not self.negated
        try:
            address = ipaddress.ip_address(source_ip)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        inside = address.version == self.network.version and address in self.network
        return inside != self.negated

    @property
    def lookup_text(self) -> str:
        """The address without its mask, as agent_control -i and the exact-IP lookup use it."""
        return self.text.lstrip("!").split("/", 1)[0]


def parse_ip(text: str) -> IpRange:
    """Parse the ip field; raises ValueError with the offending text."""
    if text.lower() == ANY_IP:
        return IpRange(text, None)
    negated = text.startswith("!")
    body = text[1:] if negated else text
    try:
        # ip_network takes both a prefix length and a dotted mask after the slash.
        network: Network = ipaddress.ip_network(body, strict=False)
    except ValueError as exc:
        raise ValueError(f"invalid ip {text!r}: {exc}") from None
    return IpRange(text, network, negated)


def validate_name(name: str) -> None:
    if not NAME_MIN <= len(name) <= NAME_MAX or not _NAME_RE.match(name):
        raise ValueError(
            f"invalid agent name {name!r}: {NAME_MIN}-{NAME_MAX} characters from A-Z a-z 0-9 - _ ."
        )


@dataclass(frozen=True, slots=True)
class AgentKey:
    """One entry of client.keys. `id` is kept exactly as written (`001`); `number` is its atoi() value."""

    id: str
    name: str
    ip: IpRange
    key: str
    removed: bool = False
    line_no: int = field(default=0, compare=False)

    @property
    def number(self) -> int:
        return int(self.id)

    def line(self) -> str:
        return f"{self.id} {self.name} {self.ip.text} {self.key}"

    def extract(self) -> str:
        """The base64 key line that `manage_agents -e` prints and an agent imports."""
        return base64.b64encode(self.line().encode()).decode()


@dataclass(frozen=True, slots=True)
class KeysProblem:
    line_no: int
    reason: str


def parse_line(text: str, line_no: int = 0) -> AgentKey | None:
    """One line to an entry; None for comments and blank lines. Raises ValueError for malformed lines."""
    if not text or text[0] in "# " or not text.strip():
        return None
    if len(text) > LINE_MAX:
        raise ValueError(f"line longer than {LINE_MAX} characters")
    parts = text.split(" ", 3)
    if len(parts) < 4 or not parts[3]:
        raise ValueError("expected '<id> <name> <ip> <key>'")
    agent_id, name, ip_text, key = parts
    if not agent_id.isdigit():
        raise ValueError(f"invalid agent id {agent_id!r}")
    if any(len(part) > FIELD_MAX for part in parts):
        raise ValueError(f"a field is longer than {FIELD_MAX} characters")
    removed = name.startswith(REMOVED_MARKS)
    ip = parse_ip(ip_text)
    return AgentKey(agent_id, name, ip, key, removed, line_no)


class KeysFile:
    """A parsed client.keys that can be edited and written back, keeping the lines it does not touch."""

    def __init__(self, lines: list[str]) -> None:
        self._lines = lines
        self.entries: list[AgentKey] = []
        self.problems: list[KeysProblem] = []
        for number, text in enumerate(lines, start=1):
            try:
                entry = parse_line(text, number)
            except ValueError as exc:
                self.problems.append(KeysProblem(number, str(exc)))
                continue
            if entry is not None:
                self.entries.append(entry)

    @classmethod
    def parse(cls, text: str) -> KeysFile:
        return cls(text.splitlines())

    def render(self) -> str:
        return "".join(line + "\n" for line in self._lines)

    def active(self) -> Iterator[AgentKey]:
        return (entry for entry in self.entries if not entry.removed)

    def by_id(self, agent_id: str | int) -> AgentKey | None:
        number = int(agent_id)
        for entry in self.active():
            if entry.number == number:
                return entry
        return None

    def next_id(self) -> str:
        """Highest id seen, removed lines included (ids are never reused), plus one, as %03d."""
        return f"{self._highest_id() + 1:03d}"

    def _highest_id(self) -> int:
        return max((entry.number for entry in self.entries), default=0)

    def add(
        self, name: str, ip: str = ANY_IP, key: str | None = None, agent_id: str | None = None
    ) -> AgentKey:
        if agent_id is not None and (
            not agent_id.isdigit() or any(e.number == int(agent_id) for e in self.entries)
        ):
            raise ValueError(f"agent id {agent_id!r} is invalid or already used")
        (entry,) = self.add_many([name], ip, key=key, first_id=int(agent_id) if agent_id else None)
        return entry

    def add_many(
        self, names: Iterable[str], ip: str = ANY_IP, *, key: str | None = None, first_id: int | None = None
    ) -> list[AgentKey]:
        """Add agents with consecutive new ids, in O(existing + new): one scan, however many are added."""
        ip_range = parse_ip(ip)
        taken = {entry.name for entry in self.active()}
        accepted: list[str] = []
        for name in names:  # validate every name before the file changes
            validate_name(name)
            if name in taken:
                raise ValueError(f"an agent named {name!r} already exists")
            taken.add(name)
            accepted.append(name)
        number = first_id if first_id is not None else self._highest_id() + 1
        added: list[AgentKey] = []
        for offset, name in enumerate(accepted):
            entry = AgentKey(f"{number + offset:03d}", name, ip_range, key or generate_key(), False)
            self._lines.append(entry.line())
            added.append(AgentKey(entry.id, name, ip_range, entry.key, False, len(self._lines)))
        self.entries.extend(added)
        return added

    def remove(self, agent_id: str | int) -> AgentKey:
        """Mark the entry removed the way manage_agents does: `!` in front of the name, in place."""
        entry = self.by_id(agent_id)
        if entry is None:
            raise KeyError(f"no agent with id {agent_id}")
        removed = AgentKey(entry.id, "!" + entry.name, entry.ip, entry.key, True, entry.line_no)
        self._lines[entry.line_no - 1] = removed.line()
        self.entries[self.entries.index(entry)] = removed
        return removed
