"""Who may enrol, under which id and key, and whom a new enrolment replaces (reference sections 14.2, 14.4).

`Registry` is client.keys as enrolment holds it between two writes: the file's lines (any line it does not
touch is written back as it was), the active agents by name and by address, and the id counter, which
only grows (removed lines count, so ids are not reused). `enrol()` runs `w_auth_validate_data()`'s checks
in Wazuh's order (groups, duplicate address, the manager's own name, duplicate name), then adds the agent;
it does no I/O: the service reads and writes the file around it, under the keys lock.

The replacement rules (`w_auth_replace_agent()`) read what the store knows of the old agent (`AgentFacts`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from agentpulse.config import ForceOptions
from agentpulse.status import ConnectionStatus
from agentpulse.wire import enrolment
from agentpulse.wire.enrolment import EnrolmentError, EnrolRequest
from agentpulse.wire.keys import ANY_IP, AgentKey, KeysFile, generate_key, parse_ip


@dataclass(frozen=True, slots=True)
class AgentFacts:
    """What the replacement rules read of an agent (Wazuh's `global get-agent-info`)."""

    status: ConnectionStatus
    disconnection_time: float
    date_add: float


@dataclass(frozen=True, slots=True)
class Replaced:
    key: AgentKey
    why: str  # for the log: "Duplicate name" or "Duplicate IP '<ip>'"


@dataclass(frozen=True, slots=True)
class Enrolled:
    key: AgentKey
    groups: tuple[str, ...]
    replaced: tuple[Replaced, ...] = ()

    def lines(self) -> Iterator[str]:
        """The client.keys lines the key stores take: each replaced agent as removed, then the new one."""
        for old in self.replaced:
            yield f"{old.key.id} !{old.key.name} {old.key.ip.text} {old.key.key}"
        yield self.key.line()


@dataclass(frozen=True, slots=True)
class Policy:
    """The `<auth>` options the rules read, and the manager's own name (an agent may not take it)."""

    force: ForceOptions = field(default_factory=ForceOptions)
    use_source_ip: bool = False
    purge: bool = False
    hostname: str = ""


FactsOf = Callable[[int], AgentFacts | None]


@dataclass(slots=True)
class _Line:
    text: str | None  # None: purged, left out when the file is written
    key: AgentKey | None = None  # the active entry on this line


class Registry:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._lines: list[_Line] = []
        self._by_id: dict[int, _Line] = {}
        self._by_name: dict[str, _Line] = {}
        self._by_ip: dict[str, _Line] = {}
        self.highest = 0  # the highest id seen or given: new ids are above it

    def load(self, keys: KeysFile) -> None:
        """The file as read (in `KeysRead.EDIT` mode, so every byte of it is written back)."""
        texts = keys.render().split("\n")[:-1]
        self._lines = [_Line(text) for text in texts]
        self._by_id, self._by_name, self._by_ip = {}, {}, {}
        for entry in keys.entries:
            self.highest = max(self.highest, entry.number)  # removed lines count: ids are not reused
            if not entry.removed:
                self._index(self._lines[entry.line_no - 1], entry)

    def _index(self, line: _Line, key: AgentKey) -> None:
        line.key = key
        self._by_id[key.number] = line
        self._by_name[key.name] = line
        if key.ip.network is not None:
            self._by_ip[key.ip.lookup_text] = line

    def _unindex(self, line: _Line) -> AgentKey:
        key = line.key
        assert key is not None
        line.key = None
        self._by_id.pop(key.number, None)
        if self._by_name.get(key.name) is line:
            del self._by_name[key.name]
        if self._by_ip.get(key.ip.lookup_text) is line:
            del self._by_ip[key.ip.lookup_text]
        return key

    def lines(self) -> Iterator[str]:
        """The file to write."""
        return (line.text for line in self._lines if line.text is not None)

    def __len__(self) -> int:
        return len(self._by_id)

    def key(self, number: int) -> AgentKey | None:
        line = self._by_id.get(number)
        return line.key if line is not None else None

    # -- the rules ----------------------------------------------------------------------------------------

    def enrol(
        self,
        request: EnrolRequest,
        source_ip: str,
        now: float,
        *,
        facts: FactsOf,
        group_exists: Callable[[str], bool],
    ) -> Enrolled:
        """Add the agent (replacing an old one if the force rules allow), or raise `EnrolmentError` with
        Wazuh's reply text; `EnrolmentError.detail` then says why an old agent was kept, for the log."""
        ip = self.address(request, source_ip)
        refusal = enrolment.validate_groups(request.groups, group_exists)
        if refusal is not None:
            raise EnrolmentError(refusal)
        replaced: list[Replaced] = []
        if ip != ANY_IP:
            old = self._by_ip.get(parse_ip(ip).lookup_text)
            if old is not None and old.key is not None:
                self._replace(old, request, now, facts, enrolment.ERR_DUPLICATE_IP.format(ip=ip))
                replaced.append(Replaced(self._remove(old), f"Duplicate IP '{ip}'"))
        if request.name == self.policy.hostname:
            raise EnrolmentError(enrolment.ERR_INVALID_NAME.format(name=request.name))
        old = self._by_name.get(request.name)
        if old is not None and old.key is not None:
            self._replace(old, request, now, facts, enrolment.ERR_DUPLICATE_NAME.format(name=request.name))
            replaced.append(Replaced(self._remove(old), "Duplicate name"))
        self.highest += 1
        key = AgentKey(f"{self.highest:03d}", request.name, parse_ip(ip), generate_key())
        line = _Line(key.line())
        self._lines.append(line)
        self._index(line, key)
        return Enrolled(key, request.groups, tuple(replaced))

    def address(self, request: EnrolRequest, source_ip: str) -> str:
        """The client.keys address: the one asked for, the source (`IP:'src'` or `<use_source_ip>`), or any."""
        if request.ip is None:
            return source_address(source_ip) if self.policy.use_source_ip else ANY_IP
        if request.ip == enrolment.SOURCE_IP:
            return source_address(source_ip)
        return request.ip

    def _replace(self, old: _Line, request: EnrolRequest, now: float, facts: FactsOf, response: str) -> None:
        """Raise `EnrolmentError(response)` unless every force rule lets the old agent go."""
        key = old.key
        assert key is not None
        reason = self._kept_because(key, request, now, facts)
        if reason is not None:
            raise EnrolmentError(response, detail=reason)

    def _kept_because(self, key: AgentKey, request: EnrolRequest, now: float, facts: FactsOf) -> str | None:
        force = self.policy.force
        if not force.enabled:
            return f"Agent '{key.id}' won't be removed because the force option is disabled."
        info = facts(key.number)
        if info is None:
            return f"Failed to get agent-info for agent '{key.id}'"
        if force.disconnected_time_enabled and info.status is not ConnectionStatus.NEVER_CONNECTED:
            if info.disconnection_time == 0:
                return f"Agent '{key.id}' can't be replaced since it is not disconnected."
            if (
                info.status is ConnectionStatus.DISCONNECTED
                and now - info.disconnection_time < force.disconnected_time
            ):
                return f"Agent '{key.id}' has not been disconnected long enough to be replaced."
        if force.after_registration_time > 0 and now - info.date_add < force.after_registration_time:
            return f"Agent '{key.id}' doesn't comply with the registration time to be removed."
        if (
            force.key_mismatch
            and request.key_hash is not None
            and request.key_hash == enrolment.key_hash(key.id, key.name, key.key)
        ):
            return f"Agent '{key.id}' key already exists on the manager."
        return None

    def _remove(self, line: _Line) -> AgentKey:
        """Out of the keys: purged from the file, or kept as `<id> !<name> <ip> <key>` (`<purge>no`)."""
        key = self._unindex(line)
        line.text = None if self.policy.purge else f"{key.id} !{key.name} {key.ip.text} {key.key}"
        return key


def source_address(peer: str) -> str:
    """A connection's source address as client.keys writes it (an IPv4 peer on a dual-stack socket as
    IPv4)."""
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return peer
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)
