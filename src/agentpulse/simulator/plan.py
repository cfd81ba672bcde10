"""The run's plan (pure apart from the file limit): what `agentpulse simulate` was asked for, checked whole.

`SimulatorConfig` is the validated request; the functions below place each agent (global index) in it:
its process, its source address, its cipher, its role at `fail_at`. They depend only on the index, so the
processes agree without talking. The danger is the machine: a TCP connection needs a free local port per
(source, destination) pair and a file per socket, so both limits are checked before anything starts.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import resource
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from agentpulse.agent.sysinfo import AGENT_VERSION
from agentpulse.wire.keys import AgentKey
from agentpulse.wire.secure import CipherKind

CONNECTIONS_PER_PROCESS: Final = 15_000  # default split: well under the 20,000 open files of a process
CONNECTIONS_PER_SOURCE: Final = 4_000  # connect() scans the used ports of an address for a free one
PORTS_PER_SOURCE: Final = 28_000
FD_HEADROOM: Final = 64  # files a process needs besides its sockets
SOURCE_BASE: Final = (127, 0)  # sources are 127.0.X.Y, X 1..255, Y 1..254
MAX_SOURCES: Final = 255 * 254
LOOPBACK: Final = ipaddress.ip_network("127.0.0.0/8")


class SimulatorError(Exception):
    """The run cannot start: the message says what to change (keys file, limits, addresses)."""


class Transport(enum.StrEnum):
    TCP = "tcp"
    UDP = "udp"


class CipherMode(enum.StrEnum):
    AES = "aes"
    BLOWFISH = "blowfish"
    MIX = "mix"  # even agents AES, odd ones Blowfish


@dataclass(frozen=True, slots=True)
class AgentTiming:
    """How long a simulated agent waits, as a Wazuh 4.x agent does (reference sections 4.4 and 10), with
    jitter so that agents refused together do not come back in the same instant.

    `recv_timeout`: the wait for the startup's ack (agentd's `recv_timeout`, 60 s; UDP agents give up
    after at most UDP_HANDSHAKE, a lost datagram being likelier than a slow manager). `retry_interval`:
    the wait after a failed connect or handshake, for the first `max_retries` failures in a row; after
    that the wait doubles per failure up to `retry_max` (the agent moves to its next server, of which the
    simulator has one). `connect_timeout`: a connect that has not completed (the agent's blocking
    connect lets the kernel retry the SYN for over a minute). `time_reconnect`: an agent whose oldest
    keep-alive has had no ack for this long reconnects (at least 3 keep-alive intervals, as agentd forces).
    """

    recv_timeout: float = 60.0
    retry_interval: float = 10.0
    max_retries: int = 5
    retry_max: float = 60.0
    connect_timeout: float = 60.0
    time_reconnect: float = 60.0
    jitter: float = 0.2

    def problems(self) -> list[str]:
        problems = []
        for name in ("recv_timeout", "retry_interval", "retry_max", "connect_timeout", "time_reconnect"):
            if not getattr(self, name) > 0:
                problems.append(f"{name.replace('_', '-')} must be above 0")
        if self.max_retries < 1:
            problems.append("max-retries must be at least 1")
        if not 0 <= self.jitter < 1:
            problems.append("jitter must be at least 0 and below 1")
        return problems


class Role(enum.IntEnum):
    """What an agent does at `fail_at` (failure injection)."""

    NORMAL = 0
    GO_SILENT = 1  # stops reading and sending, like a stopped process
    GO_SHUTDOWN = 2  # says `#!-agent shutdown ` and closes


PROTOCOLS: Final = tuple(Transport)
CIPHERS: Final = tuple(CipherMode)


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    host: str
    port: int
    agents: int
    protocol: Transport = Transport.TCP
    interval: float = 10.0
    ramp: float = 5.0
    duration: float = 60.0
    merged_sum: str | None = None  # the merged.mg md5 the agents report until a push; None: agents.MERGED_SUM
    steady_from: float | None = (
        None  # when the "steady" figures start (s into the run); None: at the ramp's end
    )
    cipher: CipherMode = CipherMode.AES
    silent_share: float = 0.0
    shutdown_share: float = 0.0
    fail_at: float | None = None
    precompute: bool = False
    peak: bool = False  # closed loop: the next keep-alive leaves as soon as the last one is acked
    batch_reads: bool = False  # sleep between ticks, so each tick reads every reply that came meanwhile
    processes: int = 1
    sources: int = 1
    version: str = AGENT_VERSION
    # Further managers after host:port, in the order an agent's <client><server> list gives them: an agent
    # whose connect or handshake fails moves to the next one (a lost connection retries the same first).
    more_servers: tuple[tuple[str, int], ...] = ()
    spread: bool = False  # agent i starts at server i % len(servers), as behind a load balancer

    @property
    def servers(self) -> tuple[tuple[str, int], ...]:
        return ((self.host, self.port), *self.more_servers)

    timing: AgentTiming = AgentTiming()
    events_per_agent: float = 0.0  # agent events (syslog, FIM, inventory) per agent per second
    event_mix: tuple[str, ...] = ("syslog", "fim", "inventory")

    def __post_init__(self) -> None:
        # In this order: the message lists every problem, the run's shape first.
        problems = [
            *self._shape_problems(),
            *self._failure_problems(),
            *self._placement_problems(),
            *self.timing.problems(),
        ]
        if problems:
            raise ValueError("; ".join(problems))

    def _shape_problems(self) -> list[str]:
        problems = []
        if self.agents < 1:
            problems.append("agents must be at least 1")
        if self.protocol not in PROTOCOLS:
            problems.append(f"protocol must be one of {', '.join(PROTOCOLS)}")
        if self.cipher not in CIPHERS:
            problems.append(f"cipher must be one of {', '.join(CIPHERS)}")
        if not self.interval > 0:
            problems.append("interval must be above 0")
        if not self.duration > 0:
            problems.append("duration must be above 0")
        if not 0 <= self.ramp < self.duration:
            problems.append("ramp must be at least 0 and shorter than the duration")
        return problems

    def _failure_problems(self) -> list[str]:
        problems = []
        for name in ("silent_share", "shutdown_share"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name.replace('_', '-')} must be between 0 and 1")
        if self.silent_share + self.shutdown_share > 1:
            problems.append("silent-share + shutdown-share must not exceed 1")
        if (self.silent_share or self.shutdown_share) and self.fail_at is None:
            problems.append("silent-share and shutdown-share need fail-at")
        if self.fail_at is not None and not 0 <= self.fail_at < self.duration:
            problems.append("fail-at must be at least 0 and before the end of the duration")
        return problems

    def _placement_problems(self) -> list[str]:
        problems = []
        if not 1 <= self.processes <= max(1, self.agents):
            problems.append("processes must be between 1 and the number of agents")
        if not 1 <= self.sources <= MAX_SOURCES:
            problems.append(f"sources must be between 1 and {MAX_SOURCES}")
        for host, _ in self.servers:
            if not is_loopback(host):
                problems.append(f"the manager must be on this machine (127.0.0.0/8), not {host!r}")
        return problems

    @property
    def failing(self) -> tuple[int, int]:
        """How many agents go silent and how many shut down at fail_at (the lowest global indices)."""
        silent = round(self.agents * self.silent_share)
        return silent, min(self.agents - silent, round(self.agents * self.shutdown_share))


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host) in LOOPBACK
    except ValueError:
        return False


def default_processes(agents: int) -> int:
    return max(1, math.ceil(agents / CONNECTIONS_PER_PROCESS))


def default_sources(agents: int) -> int:
    return max(1, math.ceil(agents / CONNECTIONS_PER_SOURCE))


def source_addresses(count: int) -> list[str]:
    """`count` distinct loopback addresses 127.0.X.Y (X from 1, Y 1..254): never 127.0.0.1 or a .0/.255."""
    if not 1 <= count <= MAX_SOURCES:
        raise ValueError(f"between 1 and {MAX_SOURCES} source addresses, not {count}")
    return [f"{SOURCE_BASE[0]}.{SOURCE_BASE[1]}.{1 + n // 254}.{1 + n % 254}" for n in range(count)]


def cipher_for(index: int, mode: CipherMode) -> CipherKind:
    if mode == CipherMode.MIX:
        return CipherKind.AES if index % 2 == 0 else CipherKind.BLOWFISH
    return CipherKind(mode)


def role_for(index: int, failing: tuple[int, int]) -> Role:
    silent, shutdown = failing
    if index < silent:
        return Role.GO_SILENT
    if index < silent + shutdown:
        return Role.GO_SHUTDOWN
    return Role.NORMAL


def source_for(key: AgentKey, index: int, sources: Sequence[str]) -> str:
    """The address an agent connects from: its own for a single-host key, else one of `sources`."""
    if key.ip.single_host:
        address = key.ip.lookup_text
        if not is_loopback(address):
            raise SimulatorError(f"agent {key.id} ({key.name}) may only connect from {address}, not loopback")
        return address
    address = sources[index % len(sources)]
    if not key.ip.allows(address):
        raise SimulatorError(
            f"agent {key.id} ({key.name}) may not connect from {address} (its ip is {key.ip.text})"
        )
    return address


def split_members(keys: Sequence[AgentKey], processes: int) -> list[list[tuple[int, AgentKey]]]:
    """Round-robin by global index, so each process gets an even share of every ramp and phase slot."""
    return [
        [(index, keys[index]) for index in range(first, len(keys), processes)] for first in range(processes)
    ]


def check_ports(config: SimulatorConfig) -> None:
    """SimulatorError when the sources cannot give every agent a local port of its own."""
    if math.ceil(config.agents / config.sources) > PORTS_PER_SOURCE:
        raise SimulatorError(
            f"{config.agents} agents over {config.sources} source address(es) need more than "
            f"{PORTS_PER_SOURCE} ports each: use more --sources"
        )


def raise_fd_limit(needed: int) -> None:
    """Lift the soft limit on open files to what `needed` sockets take; SimulatorError when the hard one is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SimulatorError(
            f"{needed} open files needed in one process but the hard limit is {hard}: use more --processes"
        )
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
