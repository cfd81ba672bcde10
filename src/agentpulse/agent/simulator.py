"""The fleet simulator behind `agentpulse simulate`: thousands of Wazuh agents, one asyncio loop per process.

The plan: every simulated agent is a small `SimAgent` record (its key, codec, state and one deadline) and
one `asyncio.Protocol` while it is connected. Nothing runs per agent between messages: one tick loop per
process (every 10 ms) advances a `TimingWheel` and acts for the agents whose deadline came: start a
connection (spread over `ramp`), give up on a handshake, send a keep-alive (each agent at its own phase of
the interval, so the fleet sends evenly). Replies arrive in `data_received` and are answered there: the
startup ack starts the keep-alives, a keep-alive ack is timed, `#!-req ... getstate` gets the state JSON,
`#!-force_reconnect` starts over. Connections beyond ~15,000 go to worker processes (spawned, each with
its own loop) that report `Snapshot`s through a pipe; the parent merges them.

The danger is that the simulator measures itself instead of the manager. So: no task, timer or log line
per agent on the hot path; latencies go into a fixed-size histogram (`LatencyHistogram`), not a list that
grows with the run; `--precompute` seals each agent's keep-alive once per connection, taking the
simulator's encryption out of the numbers; connection attempts in flight are capped so a burst queues here
rather than in the manager's listen backlog; every wait has a deadline, and the whole run ends at
`duration` whatever the manager does.

Source addresses: a TCP connection needs a free local port per (source, destination) pair, about 28,000
of them per address; connections are spread over `sources` addresses of 127.0.0.0/8, bound with
IP_BIND_ADDRESS_NO_PORT so the kernel picks the port at connect time and can reuse TIME_WAIT ports from an
earlier run.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import multiprocessing
import multiprocessing.connection
import os
import random
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final, Generic, Protocol, TypeVar, cast

from agentpulse.agent.connection import AgentCodec
from agentpulse.agent.state import CONNECTED, AgentState, getstate_reply
from agentpulse.agent.sysinfo import AGENT_VERSION, OsInfo, uname_line
from agentpulse.wire import control
from agentpulse.wire.counters import U32_MAX, SenderCounter
from agentpulse.wire.errors import WireError
from agentpulse.wire.frames import FrameDecoder
from agentpulse.wire.keys import ANY_IP, AgentKey, KeysFile, parse_line
from agentpulse.wire.secure import CipherKind

TICK: Final = 0.01  # the scheduling loop's period (s)
WHEEL_SLOTS: Final = 4096  # 41 s per revolution at 10 ms: most deadlines land in the current one
REPORT_INTERVAL: Final = 0.5  # how often a worker hands a Snapshot to its reporter (s)
COUNT_INTERVAL: Final = 5.0  # how often a report walks every agent for the live counts (s)
CONNECTS_IN_FLIGHT: Final = 512  # per process: more would only queue in the manager's listen backlog
CONNECT_TIMEOUT: Final = 10.0
HANDSHAKE_TIMEOUT: Final = {"tcp": 15.0, "udp": 3.0}  # startup sent, no ack: start over (UDP may lose it)
BACKOFF_START: Final = 0.5  # after a refused or failed attempt; doubles per failure
BACKOFF_MAX: Final = 8.0
BACKOFF_JITTER: Final = 0.2  # +-20 %, so refused agents do not come back in lock-step
RECONNECT_PAUSE: Final = 1.0  # after the manager dropped an acked connection, as agentd sleeps
ACK_TIMEOUT_MIN: Final = 10.0  # a keep-alive unacked for max(this, 2 x interval) is an error
MAX_PENDING: Final = 8  # keep-alives awaiting their ack, per agent
WRITE_BUFFER_LIMIT: Final = 64 * 1024  # per socket: beyond it the manager is not reading; skip a send
CLOSE_GRACE: Final = 2.0  # at the end, how long closed sockets may take to flush
SETUP_TIMEOUT: Final = 120.0  # spawning a worker and preparing its agents' ciphers
STOP_TIMEOUT: Final = 15.0  # after `duration`, how long workers may take to report before being killed
CONNECTIONS_PER_PROCESS: Final = 15_000  # default split: well under the 20,000 open files of a process
CONNECTIONS_PER_SOURCE: Final = 4_000  # connect() scans the used ports of an address for a free one
PORTS_PER_SOURCE: Final = 28_000
FD_HEADROOM: Final = 64  # files a worker needs besides its sockets
SOURCE_BASE: Final = (127, 0)  # sources are 127.0.X.Y, X 1..255, Y 1..254
MAX_SOURCES: Final = 255 * 254
NAME_PREFIX: Final = "sim-"
MERGED_SUM: Final = "4a8724b20dee0124ff9656783c490c4e"
IP_BIND_ADDRESS_NO_PORT: Final = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux >= 4.2
LOOPBACK: Final = ipaddress.ip_network("127.0.0.0/8")
PROTOCOLS: Final = ("tcp", "udp")
CIPHERS: Final = ("aes", "blowfish", "mix")

# Agent states. WAITING has a deadline (ramp slot or back-off); QUEUED waits for a free connect slot.
WAITING, QUEUED, CONNECTING, HANDSHAKE, RUNNING, SILENT, STOPPED = range(7)
# Roles from failure injection.
NORMAL, GO_SILENT, GO_SHUTDOWN = range(3)

# Realistic uname lines: the fleet is a mix of three common Linux servers.
_OS_PROFILES: Final = (
    (
        "6.1.0-18-amd64",
        "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)",
        OsInfo("Debian GNU/Linux", "debian", "12 (bookworm)"),
    ),
    (
        "5.15.0-105-generic",
        "#115-Ubuntu SMP Mon Apr 15 09:52:04 UTC 2024",
        OsInfo("Ubuntu", "ubuntu", "22.04.4 LTS (Jammy Jellyfish)"),
    ),
    (
        "5.14.0-362.24.1.el9_3.x86_64",
        "#1 SMP PREEMPT_DYNAMIC Thu Feb 15 07:18:13 EST 2024",
        OsInfo("Red Hat Enterprise Linux", "rhel", "9.3 (Plow)"),
    ),
)


class SimulatorError(Exception):
    """The run cannot start: the message says what to change (keys file, limits, addresses)."""


# --------------------------------------------------------------------------------------------------------
# Configuration and planning (pure)


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    host: str
    port: int
    agents: int
    protocol: str = "tcp"
    interval: float = 10.0
    ramp: float = 5.0
    duration: float = 60.0
    cipher: str = "aes"  # aes | blowfish | mix (even agents AES, odd ones Blowfish)
    silent_share: float = 0.0
    shutdown_share: float = 0.0
    fail_at: float | None = None
    precompute: bool = False
    peak: bool = False  # closed loop: the next keep-alive leaves as soon as the last one is acked
    batch_reads: bool = False  # sleep between ticks, so each tick reads every reply that came meanwhile
    processes: int = 1
    sources: int = 1
    version: str = AGENT_VERSION

    def __post_init__(self) -> None:
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
        for name in ("silent_share", "shutdown_share"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name.replace('_', '-')} must be between 0 and 1")
        if self.silent_share + self.shutdown_share > 1:
            problems.append("silent-share + shutdown-share must not exceed 1")
        if (self.silent_share or self.shutdown_share) and self.fail_at is None:
            problems.append("silent-share and shutdown-share need fail-at")
        if self.fail_at is not None and not 0 <= self.fail_at < self.duration:
            problems.append("fail-at must be at least 0 and before the end of the duration")
        if not 1 <= self.processes <= max(1, self.agents):
            problems.append("processes must be between 1 and the number of agents")
        if not 1 <= self.sources <= MAX_SOURCES:
            problems.append(f"sources must be between 1 and {MAX_SOURCES}")
        if not is_loopback(self.host):
            problems.append(f"the manager must be on this machine (127.0.0.0/8), not {self.host!r}")
        if problems:
            raise ValueError("; ".join(problems))

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


def cipher_for(index: int, mode: str) -> CipherKind:
    if mode == "mix":
        return CipherKind.AES if index % 2 == 0 else CipherKind.BLOWFISH
    return CipherKind(mode)


def role_for(index: int, failing: tuple[int, int]) -> int:
    silent, shutdown = failing
    if index < silent:
        return GO_SILENT
    if index < silent + shutdown:
        return GO_SHUTDOWN
    return NORMAL


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


def sim_uname(index: int, name: str) -> str:
    release, version, os_info = _OS_PROFILES[index % len(_OS_PROFILES)]
    return uname_line(_Uname("Linux", name, release, version, "x86_64"), os_info)


@dataclass(frozen=True, slots=True)
class _Uname:
    sysname: str
    nodename: str
    release: str
    version: str
    machine: str


def keepalive_payload(index: int, name: str, agent_ip: str) -> bytes:
    return control.build_keepalive(sim_uname(index, name), merged_sum=MERGED_SUM, agent_ip=agent_ip)


def backoff(failures: int) -> float:
    base = min(BACKOFF_MAX, BACKOFF_START * (1 << min(max(failures, 1) - 1, 16)))
    return base * random.uniform(1 - BACKOFF_JITTER, 1 + BACKOFF_JITTER)


# --------------------------------------------------------------------------------------------------------
# Keys (blocking file I/O: called before any loop runs)


def load_keys(path: Path, count: int) -> list[AgentKey]:
    """The first `count` active agents of a client.keys."""
    try:
        keys = KeysFile.parse(path.read_text(errors="replace"))
    except OSError as error:
        raise SimulatorError(f"{path}: cannot read: {error.strerror or error}") from None
    chosen: list[AgentKey] = []
    for entry in keys.active():
        if len(chosen) == count:
            break
        chosen.append(entry)
    if len(chosen) < count:
        raise SimulatorError(f"{path}: {len(chosen)} active agents, {count} asked for")
    return chosen


def create_keys(path: Path, count: int) -> list[AgentKey]:
    """Append `count` agents (`sim-NNNNNN`, ip any) to a client.keys, written whole then renamed over it.

    Numbering continues after the highest `sim-` name already there, so a second run adds new agents.
    """
    try:
        text = path.read_text(errors="replace")
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        text, mode = "", 0o640
    except OSError as error:
        raise SimulatorError(f"{path}: cannot read: {error.strerror or error}") from None
    keys = KeysFile.parse(text)
    first = 1 + max(
        (
            int(entry.name[len(NAME_PREFIX) :])
            for entry in keys.entries
            if entry.name.startswith(NAME_PREFIX) and entry.name[len(NAME_PREFIX) :].isdigit()
        ),
        default=0,
    )
    added = keys.add_many((f"{NAME_PREFIX}{first + n:06d}" for n in range(count)), ANY_IP)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "w", encoding="utf-8") as file:
            file.write(keys.render())
        os.replace(temp, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise SimulatorError(f"{path}: cannot write: {error.strerror or error}") from None
    return added


def raise_fd_limit(needed: int) -> None:
    """Lift the soft limit on open files to what `needed` sockets take; SimulatorError when the hard one is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SimulatorError(
            f"{needed} open files needed in one process but the hard limit is {hard}: use more --processes"
        )
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --------------------------------------------------------------------------------------------------------
# Measuring (pure)


def _bucket(us: int) -> int:
    """Exact below 128 us, then 64 buckets per power of two: at most 1.6 % off."""
    if us < 128:
        return us
    shift = us.bit_length() - 7
    return 64 * shift + (us >> shift)


def _bucket_value(index: int) -> float:
    if index < 128:
        return float(index)
    shift = index // 64 - 1
    return ((index - 64 * shift) << shift) + (1 << shift) / 2


_HIST_MAX_US: Final = (1 << 34) - 1  # about 4.8 hours
_HIST_SIZE: Final = _bucket(_HIST_MAX_US) + 1


class LatencyHistogram:
    """Latencies in log-linear microsecond buckets: fixed size, mergeable across processes."""

    __slots__ = ("counts", "max_us", "total")

    def __init__(self) -> None:
        self.counts = [0] * _HIST_SIZE
        self.total = 0
        self.max_us = 0

    def record(self, seconds: float) -> None:
        us = min(max(int(seconds * 1_000_000), 0), _HIST_MAX_US)
        self.counts[_bucket(us)] += 1
        self.total += 1
        if us > self.max_us:
            self.max_us = us

    def copy(self) -> LatencyHistogram:
        other = LatencyHistogram()
        other.counts, other.total, other.max_us = list(self.counts), self.total, self.max_us
        return other

    def merge(self, other: LatencyHistogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total
        self.max_us = max(self.max_us, other.max_us)

    def since(self, earlier: LatencyHistogram) -> LatencyHistogram:
        """What was recorded after `earlier` (a copy of this histogram taken before)."""
        window = LatencyHistogram()
        window.counts = [a - b for a, b in zip(self.counts, earlier.counts, strict=True)]
        window.total = self.total - earlier.total
        top = next((index for index in range(len(window.counts) - 1, -1, -1) if window.counts[index]), None)
        # The exact maximum of the window is not kept: its bucket's value, capped by the overall maximum.
        window.max_us = 0 if top is None else min(int(_bucket_value(top)), self.max_us)
        return window

    def percentile_ms(self, fraction: float) -> float | None:
        if self.total <= 0:
            return None
        rank = max(1, math.ceil(fraction * self.total))
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return min(_bucket_value(index), float(self.max_us)) / 1000
        return self.max_us / 1000

    def summary_ms(self) -> dict[str, float | int | None]:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 3)

        return {
            "p50": rounded(self.percentile_ms(0.50)),
            "p90": rounded(self.percentile_ms(0.90)),
            "p99": rounded(self.percentile_ms(0.99)),
            "max": rounded(self.max_us / 1000) if self.total else None,
            "count": self.total,
        }


class _Timed(Protocol):
    gen: int


T = TypeVar("T", bound=_Timed)


class TimingWheel(Generic[T]):
    """A hashed timing wheel: each item has at most one live deadline, kept as (tick, generation, item).

    `schedule()` bumps the item's generation, so an older entry still in some slot is skipped when its
    slot comes round; scheduling and cancelling are O(1). `advance(now)` visits the slots passed since the
    last call (at most one revolution) and returns the items due, in deadline order (sorted only after a
    stall longer than a revolution). Entries for a later revolution stay in their slot.
    """

    def __init__(self, tick: float, slots: int, now: float) -> None:
        self.tick = tick
        self._slots: list[list[tuple[int, int, T]]] = [[] for _ in range(slots)]
        self._done = math.floor(now / tick)  # the last tick processed

    def schedule(self, item: T, due: float) -> None:
        item.gen += 1
        tick = max(math.ceil(due / self.tick), self._done + 1)
        self._slots[tick % len(self._slots)].append((tick, item.gen, item))

    @staticmethod
    def cancel(item: T) -> None:
        item.gen += 1

    def advance(self, now: float) -> list[T]:
        target = math.floor(now / self.tick)
        if target <= self._done:
            return []
        size = len(self._slots)
        stalled = target - self._done > size  # a whole revolution passed: slots no longer follow time
        fired: list[tuple[int, T]] = []
        for tick in range(self._done + 1, self._done + 1 + min(target - self._done, size)):
            slot = tick % size
            bucket = self._slots[slot]
            if not bucket:
                continue
            later: list[tuple[int, int, T]] = []
            for entry in bucket:
                due, gen, item = entry
                if gen != item.gen:
                    continue
                if due <= target:
                    fired.append((due, item))
                else:
                    later.append(entry)
            self._slots[slot] = later
        self._done = target
        if stalled:
            fired.sort(key=_first)
        return [item for _, item in fired]


def _first(entry: tuple[int, object]) -> int:
    return entry[0]


def _count(counts: dict[str, int], kind: str, amount: int = 1) -> None:
    counts[kind] = counts.get(kind, 0) + amount


@dataclass(slots=True)
class Snapshot:
    """What one worker (or, merged, the whole run) has seen so far. Plain values: it crosses a pipe."""

    agents: int = 0
    connected: int = 0  # agents whose connection was established at least once
    acked: int = 0  # agents whose startup was acknowledged at least once
    connected_now: int = 0
    acked_now: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    retries: dict[str, int] = field(default_factory=dict)
    keepalives_sent: int = 0
    keepalives_acked: int = 0
    steady_acked: int = 0  # keep-alives acked after the ramp
    steady_s: float = 0.0
    requests_answered: int = 0
    forced_reconnects: int = 0
    silent: int = 0
    shutdown: int = 0
    ciphers: dict[str, int] = field(default_factory=dict)
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    steady_latency: LatencyHistogram = field(default_factory=LatencyHistogram)  # after the ramp
    startup_latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    elapsed: float = 0.0
    processes: int = 1

    def copy(self) -> Snapshot:
        return Snapshot.merged([self])

    @classmethod
    def merged(cls, parts: Sequence[Snapshot]) -> Snapshot:
        total = cls(processes=0)
        for part in parts:
            for name in (
                "agents",
                "connected",
                "acked",
                "connected_now",
                "acked_now",
                "keepalives_sent",
                "keepalives_acked",
                "steady_acked",
                "requests_answered",
                "forced_reconnects",
                "silent",
                "shutdown",
                "processes",
            ):
                setattr(total, name, getattr(total, name) + getattr(part, name))
            for mine, theirs in (
                (total.errors, part.errors),
                (total.retries, part.retries),
                (total.ciphers, part.ciphers),
            ):
                for kind, amount in theirs.items():
                    _count(mine, kind, amount)
            total.latency.merge(part.latency)
            total.steady_latency.merge(part.steady_latency)
            total.startup_latency.merge(part.startup_latency)
            total.elapsed = max(total.elapsed, part.elapsed)
            total.steady_s = max(total.steady_s, part.steady_s)
        return total


def summarize(config: SimulatorConfig, snapshot: Snapshot) -> dict[str, object]:
    """The JSON summary of a run."""
    if snapshot.steady_s > 0:
        rate = snapshot.steady_acked / snapshot.steady_s
    else:
        rate = snapshot.keepalives_acked / snapshot.elapsed if snapshot.elapsed > 0 else 0.0
    return {
        "agents": config.agents,
        "connected": snapshot.connected,
        "acked": snapshot.acked,
        "connected_at_end": snapshot.connected_now,
        "acked_at_end": snapshot.acked_now,
        "errors": sum(snapshot.errors.values()),
        "error_kinds": dict(sorted(snapshot.errors.items())),
        "retries": sum(snapshot.retries.values()),
        "retry_kinds": dict(sorted(snapshot.retries.items())),
        "keepalives_sent": snapshot.keepalives_sent,
        "keepalives_acked": snapshot.keepalives_acked,
        "ack_latency_ms": snapshot.latency.summary_ms(),
        "steady_ack_latency_ms": snapshot.steady_latency.summary_ms(),
        "startup_latency_ms": snapshot.startup_latency.summary_ms(),
        "duration_s": round(snapshot.elapsed, 3),
        "steady_s": round(snapshot.steady_s, 3),
        "keepalives_per_s": round(rate, 1),
        "requests_answered": snapshot.requests_answered,
        "forced_reconnects": snapshot.forced_reconnects,
        "failed": {"silent": snapshot.silent, "shutdown": snapshot.shutdown},
        "ciphers": dict(sorted(snapshot.ciphers.items())),
        "processes": snapshot.processes,
        "sources": config.sources,
        "protocol": config.protocol,
        "manager": f"{config.host}:{config.port}",
        "interval_s": config.interval,
        "ramp_s": config.ramp,
        "precompute": config.precompute,
        "batch_reads": config.batch_reads,
        "peak": config.peak,
    }


def exit_code(summary: dict[str, object]) -> int:
    """0 when every agent connected and was acked and nothing went wrong, else 1."""
    agents = summary["agents"]
    ok = summary["connected"] == agents and summary["acked"] == agents and summary["errors"] == 0
    return 0 if ok else 1


# --------------------------------------------------------------------------------------------------------
# One process: the agents, their connections and the scheduling loop


class SimAgent:
    __slots__ = (
        "acked_once",
        "codec",
        "connected_once",
        "failures",
        "gen",
        "index",
        "keepalive",
        "keepalive_frame",
        "key",
        "link",
        "messages_sent",
        "pending",
        "phase",
        "role",
        "source",
        "startup_at",
        "state",
        "task",
    )

    def __init__(self, index: int, key: AgentKey, codec: AgentCodec, source: str, phase: float, role: int):
        self.index = index  # global: ramp slot, keep-alive phase, role and cipher follow from it
        self.key = key
        self.codec = codec
        self.source = source
        self.phase = phase
        self.role = role
        self.state = WAITING
        self.gen = 0  # the timing wheel's generation
        self.link: _Link | None = None
        self.task: asyncio.Task[None] | None = None
        self.failures = 0
        self.pending: list[float] = []  # send times of keep-alives not yet acked, oldest first
        self.keepalive = b""
        self.keepalive_frame: bytes | None = None  # --precompute: sealed once per connection
        self.startup_at = 0.0
        self.connected_once = False
        self.acked_once = False
        self.messages_sent = 0


class _Link:
    """One connection of one agent. Callbacks from a link the agent has moved on from are ignored."""

    __slots__ = ("agent", "closing", "lost", "transport", "worker")

    def __init__(self, worker: Worker, agent: SimAgent) -> None:
        self.worker = worker
        self.agent = agent
        self.transport: asyncio.BaseTransport | None = None
        self.closing = False  # closed by us: its connection_lost is not news
        self.lost = False

    @property
    def up(self) -> bool:
        return self.transport is not None and not self.lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.worker.link_lost(self)

    def write(self, data: bytes) -> bool:
        raise NotImplementedError

    def local_ip(self) -> str:
        sockname = self.transport.get_extra_info("sockname") if self.transport is not None else None
        return str(sockname[0]) if isinstance(sockname, tuple) and sockname else self.agent.source

    def pause(self) -> None:
        """Stop reading, like a stopped process: the kernel buffers, then the manager's writes back up."""

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()


class _TcpLink(_Link, asyncio.Protocol):
    __slots__ = ("decoder",)

    def __init__(self, worker: Worker, agent: SimAgent) -> None:
        super().__init__(worker, agent)
        self.decoder = FrameDecoder()

    def data_received(self, data: bytes) -> None:
        if self.closing or self.agent.link is not self:
            return
        try:
            frames = self.decoder.feed(data)
        except WireError:
            self.worker.bad_stream(self)
            return
        for frame in frames:
            self.worker.on_message(self, frame)
            if self.agent.link is not self:
                return

    def write(self, data: bytes) -> bool:
        transport = cast(asyncio.Transport, self.transport)
        if transport is None or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
            self.worker.error("backpressure")
            return False
        transport.write(data)
        return True

    def pause(self) -> None:
        transport = cast(asyncio.Transport, self.transport)
        if transport is not None and not transport.is_closing():
            transport.pause_reading()


class _UdpLink(_Link, asyncio.DatagramProtocol):
    __slots__ = ()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if not self.closing and self.agent.link is self and self.agent.state != SILENT:
            self.worker.on_message(self, data)

    def error_received(self, exc: Exception) -> None:
        """ICMP port unreachable and the like: the handshake timeout deals with it."""

    def write(self, data: bytes) -> bool:
        transport = cast(asyncio.DatagramTransport, self.transport)
        if transport is None or transport.is_closing():
            return False
        transport.sendto(data)
        return True


class Worker:
    """The agents of one process and its scheduling loop. `run()` once; `stop()` from anywhere on the loop."""

    def __init__(
        self,
        config: SimulatorConfig,
        members: Sequence[tuple[int, AgentKey]],
        report: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self.config = config
        self.tcp = config.protocol == "tcp"
        self.report = report
        self.handshake_timeout = HANDSHAKE_TIMEOUT[config.protocol]
        self.ack_timeout = max(ACK_TIMEOUT_MIN, 2 * config.interval)
        self.startup = control.build_startup(config.version)
        sources = source_addresses(config.sources)
        failing = config.failing
        # A global counter from the clock: a later run's messages count as newer with verify_msg_id.
        first_global = int(time.time()) & U32_MAX
        self.agents = [
            SimAgent(
                index,
                key,
                AgentCodec(key, cipher_for(index, config.cipher), SenderCounter(first_global, 0), self.tcp),
                source_for(key, index, sources),
                config.interval * index / config.agents,
                role_for(index, failing),
            )
            for index, key in members
        ]
        self.ciphers: dict[str, int] = {}
        for agent in self.agents:
            _count(self.ciphers, agent.codec.cipher_kind.value)
        self.wheel: TimingWheel[SimAgent] = TimingWheel(TICK, WHEEL_SLOTS, time.monotonic())
        self.queue: list[SimAgent] = []  # QUEUED agents, oldest first (consumed from `queue_head`)
        self.queue_head = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.t0 = 0.0
        self.errors: dict[str, int] = {}
        self.retries: dict[str, int] = {}
        self.connected = self.acked = 0
        self.keepalives_sent = self.keepalives_acked = 0
        self.steady_base: tuple[int, float] | None = None  # (acked, time) when the ramp ended
        self.steady_latency_base: LatencyHistogram | None = None
        self.requests_answered = self.forced_reconnects = 0
        self.silent = self.shutdown = 0
        self.latency = LatencyHistogram()
        self.startup_latency = LatencyHistogram()
        self.ended_at: float | None = None
        self._counted = (-math.inf, 0, 0)  # (when, connected_now, acked_now) of the last walk

    # -- the loop -----------------------------------------------------------------------------------------

    def stop(self) -> None:
        self.stopping = True

    async def run(self) -> Snapshot:
        config = self.config
        raise_fd_limit(len(self.agents) + FD_HEADROOM)
        now = time.monotonic()
        self.t0 = now
        self.wheel = TimingWheel(TICK, WHEEL_SLOTS, now)
        for agent in self.agents:
            self.wheel.schedule(agent, now + config.ramp * agent.index / config.agents)
        deadline = now + config.duration
        fail_time = now + config.fail_at if config.fail_at is not None else None
        ramp_end = now + config.ramp
        next_report = now + REPORT_INTERVAL
        try:
            while not self.stopping:
                now = time.monotonic()
                if now >= deadline:
                    break
                if self.steady_base is None and now >= ramp_end:
                    self.steady_base = (self.keepalives_acked, now)
                    self.steady_latency_base = self.latency.copy()
                if fail_time is not None and now >= fail_time:
                    fail_time = None
                    self.inject_failures(now)
                for agent in self.wheel.advance(now):
                    self.on_timer(agent, now)
                self.start_connects()
                if self.report is not None and now >= next_report:
                    next_report = now + REPORT_INTERVAL
                    self.report(self.snapshot(now))
                if config.batch_reads:
                    # One loop iteration for the sockets that became readable during the last tick, then
                    # a blocking sleep: one wake-up per tick instead of one per reply. A reply is timed
                    # when read, so its latency is overstated by up to one tick.
                    await asyncio.sleep(0)
                    time.sleep(max(0.0, now + TICK - time.monotonic()))
                else:
                    await asyncio.sleep(TICK)
            if config.batch_reads:
                await asyncio.sleep(TICK)  # the replies to the last tick's keep-alives, read as they come
        finally:
            self.ended_at = time.monotonic()
            final = self.snapshot(self.ended_at, final=True)
            await self.close_all()
        return final

    async def close_all(self) -> None:
        """Cancel connection attempts and close every socket; wait (bounded) for them to go."""
        self.stopping = True
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=CLOSE_GRACE)
        links = [agent.link for agent in self.agents if agent.link is not None]
        for link in links:
            link.close()
        deadline = time.monotonic() + CLOSE_GRACE
        while any(link.up for link in links) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def on_timer(self, agent: SimAgent, now: float) -> None:
        state = agent.state
        if state == WAITING:
            agent.state = QUEUED
            self.queue.append(agent)
        elif state == CONNECTING:
            if agent.task is not None:
                agent.task.cancel()  # the task reports the timeout
        elif state == HANDSHAKE:
            self.retry(agent, "handshake_timeout", now)
        elif state == RUNNING:
            # --peak: acks drive the sending; the timer only restarts an agent whose ack never came.
            if not self.config.peak or not agent.pending or now - agent.pending[0] > self.ack_timeout:
                self.send_keepalive(agent)
            self.wheel.schedule(agent, self.next_keepalive(agent, now))

    def start_connects(self) -> None:
        queue = self.queue
        while self.queue_head < len(queue) and len(self.tasks) < CONNECTS_IN_FLIGHT and not self.stopping:
            agent = queue[self.queue_head]
            self.queue_head += 1
            if agent.state == QUEUED:
                self.connect(agent)
        if self.queue_head == len(queue):
            queue.clear()
            self.queue_head = 0

    def next_keepalive(self, agent: SimAgent, now: float) -> float:
        """The agent's next slot after `now`: t0 + phase + k * interval.

        The slot may come soon after the keep-alive sent with the ack; skipping it instead would leave a
        hole in the fleet's rate for a whole interval after the ramp.
        """
        interval = self.config.interval
        base = self.t0 + agent.phase
        return base + (math.floor((now - base) / interval) + 1) * interval

    # -- connecting ---------------------------------------------------------------------------------------

    def connect(self, agent: SimAgent) -> None:
        link: _Link = _TcpLink(self, agent) if self.tcp else _UdpLink(self, agent)
        agent.link = link
        agent.state = CONNECTING
        task = asyncio.get_running_loop().create_task(self._open(agent, link))
        agent.task = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        self.wheel.schedule(agent, time.monotonic() + CONNECT_TIMEOUT)

    async def _open(self, agent: SimAgent, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        address = (self.config.host, self.config.port)
        try:
            if isinstance(link, _TcpLink):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                try:
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    sock.bind((agent.source, 0))
                    await loop.sock_connect(sock, address)
                    await loop.create_connection(lambda: link, sock=sock)
                except BaseException:
                    if sock.fileno() != -1:  # uvloop detaches a socket it has already closed
                        sock.close()
                    raise
            else:
                await loop.create_datagram_endpoint(
                    lambda: cast(_UdpLink, link), local_addr=(agent.source, 0), remote_addr=address
                )
        except asyncio.CancelledError:
            self._connect_ended(agent, link, "connect_timeout")
            raise
        except OSError as error:
            self._connect_ended(agent, link, _connect_error(error))
            return
        self._connect_ended(agent, link, None)
        self.connected_link(agent, link)

    def _connect_ended(self, agent: SimAgent, link: _Link, failure: str | None) -> None:
        if agent.link is not link:
            return
        agent.task = None
        if failure is not None and not self.stopping:
            self.retry(agent, failure, time.monotonic())

    def connected_link(self, agent: SimAgent, link: _Link) -> None:
        if agent.link is not link or self.stopping or agent.state == STOPPED:
            link.close()
            return
        if not agent.connected_once:
            agent.connected_once = True
            self.connected += 1
        if agent.state == SILENT:  # stopped while connecting: the kernel finished the connect anyway
            link.pause()
            return
        self.send(agent, self.startup)
        agent.startup_at = time.monotonic()
        agent.state = HANDSHAKE
        self.wheel.schedule(agent, agent.startup_at + self.handshake_timeout)

    def drop_link(self, agent: SimAgent) -> None:
        if agent.task is not None:
            agent.task.cancel()
            agent.task = None
        link, agent.link = agent.link, None
        if link is not None:
            link.close()
        agent.pending.clear()
        agent.keepalive_frame = None

    def retry(self, agent: SimAgent, kind: str, now: float, delay: float | None = None) -> None:
        """This attempt failed (refused, timed out, dropped): try again after a back-off."""
        self.drop_link(agent)
        if agent.state in (SILENT, STOPPED):
            return
        _count(self.retries, kind)
        agent.failures += 1
        agent.state = WAITING
        self.wheel.schedule(agent, now + (backoff(agent.failures) if delay is None else delay))

    def link_lost(self, link: _Link) -> None:
        agent = link.agent
        if link.closing or agent.link is not link or self.stopping:
            return
        state = agent.state
        if state == HANDSHAKE:  # closed without an ack: an unknown key (not loaded yet) or a refusal
            self.retry(agent, "refused", time.monotonic())
        elif state == RUNNING:
            self.error("connection_lost")
            self.retry(agent, "reconnect", time.monotonic(), RECONNECT_PAUSE * random.uniform(0.8, 1.2))

    def bad_stream(self, link: _Link) -> None:
        self.error("bad_frame")
        self.retry(link.agent, "reconnect", time.monotonic(), RECONNECT_PAUSE)

    # -- messages -----------------------------------------------------------------------------------------

    def send(self, agent: SimAgent, payload: bytes) -> bool:
        link = agent.link
        if link is None or not link.write(agent.codec.seal(payload)):
            return False
        agent.messages_sent += 1
        return True

    def send_keepalive(self, agent: SimAgent) -> None:
        link = agent.link
        if link is None:
            return
        now = time.monotonic()
        pending = agent.pending
        while pending and (now - pending[0] > self.ack_timeout or len(pending) >= MAX_PENDING):
            pending.pop(0)
            self.error("ack_timeout")
        data = agent.keepalive_frame or agent.codec.seal(agent.keepalive)
        if link.write(data):
            pending.append(now)
            agent.messages_sent += 1
            self.keepalives_sent += 1

    def on_message(self, link: _Link, data: bytes) -> None:
        agent = link.agent
        if agent.state in (SILENT, STOPPED):
            return
        try:
            message = agent.codec.open(data)
        except WireError:
            self.error("bad_message")
            return
        now = time.monotonic()
        if isinstance(message, control.Ack):
            if agent.state == RUNNING:
                if agent.pending:
                    self.latency.record(now - agent.pending.pop(0))
                    self.keepalives_acked += 1
                    if self.config.peak and not self.stopping:
                        self.send_keepalive(agent)
            elif agent.state == HANDSHAKE:
                self.handshake_done(agent, link, now)
        elif isinstance(message, control.Request):
            self.answer(agent, message)
        elif isinstance(message, control.ForceReconnect):
            if agent.state in (HANDSHAKE, RUNNING):
                self.forced_reconnects += 1
                self.drop_link(agent)
                agent.state = WAITING
                self.wheel.schedule(agent, now)
        elif isinstance(message, control.ErrorReply):
            self.error("manager_error")  # e.g. a refused version: no ack follows, the handshake times out

    def handshake_done(self, agent: SimAgent, link: _Link, now: float) -> None:
        self.startup_latency.record(now - agent.startup_at)
        agent.state = RUNNING
        agent.failures = 0
        if not agent.acked_once:
            agent.acked_once = True
            self.acked += 1
        agent.keepalive = keepalive_payload(agent.index, agent.key.name, link.local_ip())
        if self.config.precompute:
            agent.keepalive_frame = agent.codec.seal(agent.keepalive)
        self.send_keepalive(agent)  # at once, as agentd does after its startup
        self.wheel.schedule(agent, self.next_keepalive(agent, now))

    def answer(self, agent: SimAgent, request: control.Request) -> None:
        """agcom: `getstate` gets the state JSON, anything else `err Unrecognized command`."""
        if not self.tcp:
            self.send(agent, control.build_request_reply(request.counter, control.REQUEST_ACK))
        if control.is_getstate(request):
            wall = time.time()
            state = AgentState(CONNECTED, last_keepalive=wall, last_ack=wall, msg_sent=agent.messages_sent)
            response = getstate_reply(state)
        else:
            response = control.ERR_UNRECOGNIZED
        if self.send(agent, control.build_request_reply(request.counter, response)):
            self.requests_answered += 1

    def error(self, kind: str) -> None:
        _count(self.errors, kind)

    # -- failure injection --------------------------------------------------------------------------------

    def inject_failures(self, now: float) -> None:
        for agent in self.agents:
            if agent.role == GO_SILENT:
                self.silent += 1
                self.wheel.cancel(agent)
                if agent.state == QUEUED:
                    agent.state = STOPPED
                    continue
                agent.state = SILENT
                agent.pending.clear()
                if agent.link is not None:
                    agent.link.pause()  # a connect in progress finishes and pauses too
            elif agent.role == GO_SHUTDOWN:
                self.shutdown += 1
                self.wheel.cancel(agent)
                if agent.state in (HANDSHAKE, RUNNING):
                    self.send(agent, control.SHUTDOWN)
                agent.state = STOPPED
                self.drop_link(agent)

    # -- reporting ----------------------------------------------------------------------------------------

    def _count_live(self) -> tuple[int, int]:
        """Agents connected and acked right now: a walk over every agent, so not at every report."""
        connected_now = acked_now = 0
        for agent in self.agents:
            if agent.link is not None and agent.link.up:
                connected_now += 1
                if agent.state == RUNNING:
                    acked_now += 1
        return connected_now, acked_now

    def snapshot(self, now: float, final: bool = False) -> Snapshot:
        if final or now - self._counted[0] >= COUNT_INTERVAL:
            self._counted = (now, *self._count_live())
        _, connected_now, acked_now = self._counted
        errors = dict(self.errors)
        if final:
            never_connected = sum(1 for agent in self.agents if not agent.connected_once)
            never_acked = sum(1 for agent in self.agents if agent.connected_once and not agent.acked_once)
            if never_connected:
                _count(errors, "never_connected", never_connected)
            if never_acked:
                _count(errors, "never_acked", never_acked)
        steady_acked, steady_s = 0, 0.0
        if self.steady_base is not None:
            steady_acked = self.keepalives_acked - self.steady_base[0]
            steady_s = now - self.steady_base[1]
        return Snapshot(
            agents=len(self.agents),
            connected=self.connected,
            acked=self.acked,
            connected_now=connected_now,
            acked_now=acked_now,
            errors=errors,
            retries=dict(self.retries),
            keepalives_sent=self.keepalives_sent,
            keepalives_acked=self.keepalives_acked,
            steady_acked=steady_acked,
            steady_s=steady_s,
            requests_answered=self.requests_answered,
            forced_reconnects=self.forced_reconnects,
            silent=self.silent,
            shutdown=self.shutdown,
            ciphers=dict(self.ciphers),
            latency=self.latency.copy(),
            steady_latency=(
                self.latency.since(self.steady_latency_base)
                if self.steady_latency_base is not None
                else LatencyHistogram()
            ),
            startup_latency=self.startup_latency.copy(),
            elapsed=now - self.t0 if self.t0 else 0.0,
            processes=1,
        )


def _connect_error(error: OSError) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connect_refused"
    if isinstance(error, TimeoutError):
        return "connect_timeout"
    if error.errno == 99:  # EADDRNOTAVAIL: no free port left for this source address
        return "no_free_port"
    return "connect_error"


# --------------------------------------------------------------------------------------------------------
# Progress


class Progress:
    """The live line on stderr: rewritten in place (`\\r`) on a terminal, a plain line every 5 s otherwise."""

    def __init__(self, mode: str, stream: IO[str], agents: int) -> None:
        self.stream = stream
        self.agents = agents
        self.enabled = mode != "never"
        self.tty = mode == "always" or (mode == "auto" and stream.isatty())
        self.every = REPORT_INTERVAL if self.tty else 5.0
        self._last = time.monotonic()
        self._previous: Snapshot | None = None
        self._width = 0

    def due(self) -> bool:
        """Whether a line is to be written now: merging the workers' snapshots is only worth it then."""
        return self.enabled and time.monotonic() - self._last >= self.every

    def update(self, snapshot: Snapshot) -> None:
        if not self.due():
            return
        self._last = time.monotonic()
        line = self.render(snapshot, self._previous)
        self._previous = snapshot.copy()
        with contextlib.suppress(OSError, ValueError):
            if self.tty:
                self.stream.write("\r" + line.ljust(self._width))
                self._width = len(line)
            else:
                self.stream.write(line + "\n")
            self.stream.flush()

    def render(self, current: Snapshot, previous: Snapshot | None) -> str:
        window = current.latency.since(previous.latency) if previous else current.latency
        seconds = current.elapsed - (previous.elapsed if previous else 0.0)
        acked = current.keepalives_acked - (previous.keepalives_acked if previous else 0)
        rate = acked / seconds if seconds > 0 else 0.0

        def ms(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}"

        return (
            f"[{current.elapsed:6.1f}s] connected {current.connected_now}/{self.agents}"
            f"  acked {current.acked_now}  errors {sum(current.errors.values())}"
            f"  retries {sum(current.retries.values())}  keep-alives/s {rate:,.0f}"
            f"  ack p50 {ms(window.percentile_ms(0.5))} ms p99 {ms(window.percentile_ms(0.99))} ms"
        )

    def finish(self) -> None:
        if self.enabled and self.tty and self._width:
            with contextlib.suppress(OSError, ValueError):
                self.stream.write("\n")
                self.stream.flush()


# --------------------------------------------------------------------------------------------------------
# Running: in this process, or spread over spawned worker processes


def run(
    config: SimulatorConfig, keys: Sequence[AgentKey], progress: Progress | None = None
) -> dict[str, object]:
    """Simulate the fleet and return the summary. SIGINT/SIGTERM end the run early, with a summary."""
    if len(keys) != config.agents:
        raise ValueError(f"{len(keys)} keys for {config.agents} agents")
    if math.ceil(config.agents / config.sources) > PORTS_PER_SOURCE:
        raise SimulatorError(
            f"{config.agents} agents over {config.sources} source address(es) need more than "
            f"{PORTS_PER_SOURCE} ports each: use more --sources"
        )
    sources = source_addresses(config.sources)
    for index, key in enumerate(keys):
        source_for(key, index, sources)  # a key this machine cannot speak for fails here, not in a worker
    members = split_members(keys, config.processes)
    raise_fd_limit(len(members[0]) + FD_HEADROOM)  # checked before anything starts
    try:
        if config.processes == 1:
            snapshot = _run_here(config, members[0], progress)
        else:
            snapshot = _run_spawned(config, members, progress)
    finally:
        if progress is not None:
            progress.finish()
    return summarize(config, snapshot)


def _run_here(
    config: SimulatorConfig, members: list[tuple[int, AgentKey]], progress: Progress | None
) -> Snapshot:
    import uvloop

    report = progress.update if progress is not None and progress.enabled else None
    worker = Worker(config, members, report)

    async def main() -> Snapshot:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.add_signal_handler(signum, worker.stop)
        return await worker.run()

    # uvloop leaves its own (closed) loop's handlers installed: give the caller back its own.
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        return uvloop.run(main())
    finally:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in previous.items():
                signal.signal(signum, handler)


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a spawned worker needs: the configuration and its agents (global index, client.keys line)."""

    config: SimulatorConfig
    members: list[tuple[int, str]]


def _worker_main(conn: multiprocessing.connection.Connection, spec: WorkerSpec) -> None:
    """Entry point of a spawned worker process."""
    # The parent coordinates: a terminal's Ctrl-C reaches the whole process group, the parent says stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import uvloop

    try:
        uvloop.run(_worker_async(conn, spec))
    except BaseException as error:
        with contextlib.suppress(OSError, ValueError):
            conn.send(("error", f"{type(error).__name__}: {error}"))
    finally:
        conn.close()


async def _worker_async(conn: multiprocessing.connection.Connection, spec: WorkerSpec) -> None:
    loop = asyncio.get_running_loop()
    members: list[tuple[int, AgentKey]] = []
    for index, line in spec.members:
        key = parse_line(line)
        if key is None:
            raise SimulatorError(f"unreadable key line for agent {index}")
        members.append((index, key))
    worker: Worker

    def report(snapshot: Snapshot) -> None:
        try:
            conn.send(("stats", snapshot))
        except OSError:  # the parent is gone
            worker.stop()

    worker = Worker(spec.config, members, report)
    go: asyncio.Future[None] = loop.create_future()

    def release() -> None:
        if not go.done():
            go.set_result(None)

    def readable() -> None:
        try:
            while conn.poll():
                message = conn.recv()
                if message[0] == "go":
                    release()
                elif message[0] == "stop":
                    worker.stop()
                    release()
        except (EOFError, OSError):  # the parent is gone
            loop.remove_reader(conn.fileno())
            worker.stop()
            release()

    loop.add_reader(conn.fileno(), readable)

    def terminate() -> None:
        worker.stop()
        release()

    loop.add_signal_handler(signal.SIGTERM, terminate)
    conn.send(("ready", None))
    await asyncio.wait_for(go, SETUP_TIMEOUT)
    snapshot = await worker.run()
    loop.remove_reader(conn.fileno())
    conn.send(("final", snapshot))


def _run_spawned(
    config: SimulatorConfig, members: list[list[tuple[int, AgentKey]]], progress: Progress | None
) -> Snapshot:
    context = multiprocessing.get_context("spawn")
    stop_requested = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous = {signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    processes: list[multiprocessing.process.BaseProcess] = []
    conns: list[multiprocessing.connection.Connection] = []
    latest: dict[int, Snapshot] = {}
    finals: dict[int, Snapshot] = {}
    failures: dict[str, int] = {}
    try:
        for number, part in enumerate(members):
            parent_end, child_end = context.Pipe()
            spec = WorkerSpec(config, [(index, key.line()) for index, key in part])
            process = context.Process(
                target=_worker_main, args=(child_end, spec), name=f"agentpulse-simulate-{number}", daemon=True
            )
            process.start()
            child_end.close()
            processes.append(process)
            conns.append(parent_end)
        open_conns = dict(enumerate(conns))
        ready: set[int] = set()

        def receive(timeout: float) -> None:
            by_conn = {id(conn): number for number, conn in open_conns.items()}
            for conn in multiprocessing.connection.wait(list(open_conns.values()), timeout):
                number = by_conn[id(conn)]
                try:
                    kind, payload = cast(multiprocessing.connection.Connection, conn).recv()
                except (EOFError, OSError):
                    del open_conns[number]
                    continue
                if kind == "ready":
                    ready.add(number)
                elif kind == "stats":
                    latest[number] = payload
                elif kind == "final":
                    finals[number] = payload
                elif kind == "error":
                    print(f"agentpulse simulate: worker {number}: {payload}", file=sys.stderr)

        deadline = time.monotonic() + SETUP_TIMEOUT
        while (
            len(ready) < len(processes) and open_conns and time.monotonic() < deadline and not stop_requested
        ):
            receive(0.2)
        for number in ready:
            with contextlib.suppress(OSError):
                conns[number].send(("go", None))
        stop_sent = False
        deadline = time.monotonic() + config.duration + STOP_TIMEOUT
        while open_conns and len(finals) < len(processes) and time.monotonic() < deadline:
            if (stop_requested or len(ready) < len(processes)) and not stop_sent:
                stop_sent = True
                for conn in open_conns.values():
                    with contextlib.suppress(OSError):
                        conn.send(("stop", None))
            receive(0.2)
            if progress is not None and latest and progress.due():
                progress.update(Snapshot.merged(list(latest.values())))
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for child in processes:
            child.join(timeout=max(0.1, STOP_TIMEOUT / len(processes)))
            if child.is_alive():
                child.terminate()
                child.join(timeout=2)
            if child.is_alive():
                child.kill()
                child.join(timeout=2)
        for conn in conns:
            conn.close()
    parts = [finals.get(number) or latest.get(number) or Snapshot() for number in range(len(members))]
    for number in range(len(members)):
        if number not in finals:  # died, hung or never started: what it reported last is all there is
            _count(failures, "worker_unfinished")
            parts[number].agents = len(members[number])
    total = Snapshot.merged(parts)
    total.processes = len(processes)
    for kind, amount in failures.items():
        _count(total.errors, kind, amount)
    return total
