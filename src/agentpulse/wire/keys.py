"""`client.keys`: reading, editing and writing it as Wazuh does, and deriving each agent's cipher keys.

A keys file is edited by people and by tools at once, so `KeysFile` keeps every line it does not touch
byte for byte: comments, removed entries and odd spacing survive an add or a remove. Parsing never raises
for one bad line; it records the problem and skips the line, as Wazuh's reader does. That leniency is the
danger on a reload: a skipped line is a removed agent. `check_keys` is the strict reading a reload is
judged by (every line valid, or the file is refused; see `remoted/keyguard.py`).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import secrets
from collections.abc import Iterable, Iterator, Set
from dataclasses import dataclass, field

FIELD_MAX = 127  # each field is copied into a 128-byte buffer (KEYSIZE)
LINE_MAX = 2047  # lines are read with a 2048-byte buffer (OS_BUFFER_SIZE)
NAME_MIN, NAME_MAX = 2, FIELD_MAX  # Wazuh allows 128, but a 128-byte field does not fit KEYSIZE
ANY_IP = "any"
REMOVED_MARKS = ("!", "#")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")
KEY_LENGTH = 64  # two MD5 hex digests: what authd, manage_agents and the API write (reference 1, 14.4)
_KEY_RE = re.compile(rf"[0-9A-Fa-f]{{{KEY_LENGTH}}}")
ID_MAX = 2**31 - 1  # Wazuh reads ids with atoi() into an int
FILE_MAX = 48 * 1024 * 1024  # about 500,000 agents; a reload hands the keys to workers in one 64 MB frame
REASON_MAX = 160  # a problem's text, cut: it goes to the log and to `keys reload`
# NUL, control characters (a tab aside; \x85, \u2028 and \u2029 too: str.splitlines() breaks lines
# there that Wazuh reads as one) and U+FFFD, which decoding puts where the bytes are not UTF-8.
_BAD_CHAR = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029\ufffd]")
_BAD_IN_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x85\u2028\u2029\ufffd]")  # the same, but \n

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


def single_host_address(text: str) -> str | None:
    """For an ip field already validated (a line a key store accepted): its address when it is a
    single IPv4 host (`IpRange.single_host`), else None. A bare dotted address is answered without
    `ipaddress`, which would cost more than the rest of a 200,000-line load; anything else is parsed."""
    if text.lower() == ANY_IP:
        return None
    if "/" not in text and ":" not in text and not text.startswith("!"):
        return text
    ip = parse_ip(text)
    return ip.lookup_text if ip.single_host else None


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
    if not (agent_id.isascii() and agent_id.isdigit()):  # int() refuses other digits, like "²"
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

    def blanked(self, line_numbers: Set[int]) -> KeysFile:
        """The same file with these lines emptied: the entries of the other lines, numbered as before."""
        return KeysFile(["" if n in line_numbers else line for n, line in enumerate(self._lines, start=1)])

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
            not (agent_id.isascii() and agent_id.isdigit())
            or any(e.number == int(agent_id) for e in self.entries)
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


# --------------------------------------------------------------------------------------------------------
# Strict reading: what a reload is judged by


@dataclass(frozen=True, slots=True)
class CheckedKeys:
    """client.keys read strictly: the parsed file, and every reason to refuse it (none: it is valid)."""

    keys: KeysFile
    problems: tuple[KeysProblem, ...]

    @property
    def valid(self) -> bool:
        return not self.problems

    def usable(self) -> KeysFile:
        """The file without its invalid lines: what a manager that must start anyway loads."""
        if not self.problems:
            return self.keys
        if any(problem.line_no == 0 for problem in self.problems):  # the file as a whole is refused
            return KeysFile([])
        return self.keys.blanked({problem.line_no for problem in self.problems})


def check_keys(data: bytes) -> CheckedKeys:
    """The file's bytes, parsed, with every invalid line (number and reason).

    Lines are split on `\\n` only (an ending `\\r` is dropped), as Wazuh's fgets() reads them; for a file
    without problems the entries are exactly those `KeysFile.parse` finds. Invalid: what `parse_line`
    refuses, and what it lets through: NUL bytes, bytes that are not UTF-8, control characters, lines
    over LINE_MAX (comments too: Wazuh would read the rest as a line of its own), keys that are not
    KEY_LENGTH hex characters, bad names, id 0 (the manager's) or above ID_MAX, an id or a name that an
    earlier active entry has. A file over FILE_MAX is refused as a whole (line 0).
    """
    if len(data) > FILE_MAX:
        return CheckedKeys(KeysFile([]), (KeysProblem(0, f"file larger than {FILE_MAX} bytes"),))
    text = data.decode("utf-8", "replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n")  # an \r left is a control character inside a line
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    keys = KeysFile(lines)
    reasons: dict[int, str] = {}
    if _BAD_IN_TEXT.search(text) is not None or max(map(len, lines), default=0) > LINE_MAX:
        for number, line in enumerate(lines, start=1):  # only a file with a problem is read line by line
            reason = _text_problem(line)
            if reason is not None:
                reasons[number] = reason
    for problem in keys.problems:
        reasons.setdefault(problem.line_no, problem.reason)
    _entry_problems(keys.entries, reasons)
    problems = tuple(KeysProblem(number, _printable(reasons[number])) for number in sorted(reasons))
    return CheckedKeys(keys, problems)


def _text_problem(line: str) -> str | None:
    if len(line) > LINE_MAX:
        return f"line of {len(line)} characters, longer than {LINE_MAX}"
    found = _BAD_CHAR.search(line)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return "NUL byte"
    if char == "\ufffd":
        return "bytes that are not UTF-8"
    return f"control character {char!a}"


def _entry_problem(entry: AgentKey, number: int) -> str | None:
    if not _KEY_RE.fullmatch(entry.key):
        return f"key of {len(entry.key)} characters, expected {KEY_LENGTH} hex characters"
    if number == 0:
        return f"agent id {entry.id} is the manager's"
    if number > ID_MAX:
        return f"agent id {entry.id[:20]}... above {ID_MAX}"
    name = entry.name[1:] if entry.removed else entry.name
    try:
        validate_name(name)
    except ValueError as error:
        return str(error)
    return None


def _entry_problems(entries: list[AgentKey], reasons: dict[int, str]) -> None:
    """Per entry not already refused: its own fields, then duplicates among the active entries (the
    first line keeps the id or name, a later one is the invalid line)."""
    ids: dict[int, int] = {}
    names: dict[str, int] = {}
    for entry in entries:
        line_no = entry.line_no
        if line_no in reasons:
            continue
        number = int(entry.id)
        reason = _entry_problem(entry, number)
        if reason is None and not entry.removed:
            if number in ids:
                reason = f"agent id {entry.id} already on line {ids[number]}"
            elif entry.name in names:
                reason = f"agent name {entry.name!r} already on line {names[entry.name]}"
        if reason is not None:
            reasons[line_no] = reason
        elif not entry.removed:
            ids[number] = line_no
            names[entry.name] = line_no


def _printable(reason: str) -> str:
    """ASCII only, cut to REASON_MAX: the reasons quote the file, and they go to the log."""
    text = reason.encode("ascii", "backslashreplace").decode("ascii")
    return text if len(text) <= REASON_MAX else text[: REASON_MAX - 3] + "..."
