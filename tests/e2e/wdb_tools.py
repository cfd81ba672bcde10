"""Helpers for the query-socket tests against a real manager: big client.keys files written in one go,
raw framed requests, and wire-level agents that keep alive and obey `#!-force_reconnect`."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

from agentpulse.agent.connection import AgentCodec, AgentConnection
from agentpulse.wdb.protocol import unix_address
from agentpulse.wire import control
from agentpulse.wire.frames import LENGTH
from agentpulse.wire.keys import AgentKey, KeysFile
from tests.e2e.harness import LOOPBACK, ManagerProcess
from tests.e2e.test_statuses import KEEPALIVE

CONNECT_ATTEMPTS = 20


def write_keys(manager: ManagerProcess, count: int, prefix: str = "agent") -> list[AgentKey]:
    """`count` agents in client.keys at once (KeysFile.add_many: linear, unlike one add() per agent)."""
    manager.home.create_layout()
    keys = KeysFile.parse("")
    added = keys.add_many(f"{prefix}-{n:05d}" for n in range(1, count + 1))
    manager.home.client_keys.write_text(keys.render())
    return added


def keep_only(manager: ManagerProcess, numbers: set[int]) -> None:
    """Rewrite client.keys with only these agents (the others are gone, as after manage_agents -r)."""
    text = manager.home.client_keys.read_text()
    kept = [line for line in text.splitlines() if int(line.split(" ", 1)[0]) in numbers]
    tmp = manager.home.client_keys.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(manager.home.client_keys)


def raw_socket(manager: ManagerProcess, timeout: float = 15.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    with unix_address(manager.home.wdb_socket) as address:
        sock.connect(address)
    return sock


def frame(body: bytes) -> bytes:
    return LENGTH.pack(len(body)) + body


def answer(sock: socket.socket) -> bytes | None:
    """One framed answer; None when the manager closed the connection."""
    data = b""
    length: int | None = None
    while True:
        want = LENGTH.size if length is None else length
        while len(data) < want:
            try:
                chunk = sock.recv(want - len(data))
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            data += chunk
        if length is not None:
            return data
        (length,) = LENGTH.unpack(data)
        data = b""
        if length == 0:
            return b""


def ask(manager: ManagerProcess, body: bytes) -> bytes | None:
    with raw_socket(manager) as sock:
        sock.sendall(frame(body))
        return answer(sock)


@dataclass
class FleetStats:
    acks: dict[int, int] = field(default_factory=dict)
    sent: dict[int, int] = field(default_factory=dict)
    sessions: dict[int, int] = field(default_factory=dict)  # completed handshakes per agent
    reconnects: dict[int, int] = field(default_factory=dict)  # force_reconnect orders obeyed
    failures: list[str] = field(default_factory=list)
    quiet: bool = False  # stop sending keep-alives (still take answers), to count the last acks

    def all_acked(self) -> bool:
        return all(self.acks.get(number, 0) >= sent for number, sent in self.sent.items())


async def run_agent(
    manager: ManagerProcess,
    key: AgentKey,
    stop: asyncio.Event,
    stats: FleetStats,
    interval: float | None = None,
) -> None:
    """Connect, startup, keep-alive; then keep alive every `interval` s (or stay quiet) until `stop`.
    On `#!-force_reconnect` (or a closed connection), close and do it all again, like the agent daemon."""
    codec = AgentCodec(key)
    number = key.number
    for _ in range(CONNECT_ATTEMPTS):  # bounded: each round is one connection
        if stop.is_set():
            return
        try:
            connection = await AgentConnection.open(codec, LOOPBACK, manager.port)
        except OSError as error:
            stats.failures.append(f"{number}: connect: {error}")
            await asyncio.sleep(0.2)
            continue
        try:
            if not await _handshake(connection, number, stats):
                await asyncio.sleep(0.2)
                continue
            stats.sessions[number] = stats.sessions.get(number, 0) + 1
            if await _alive(connection, number, stop, stats, interval):
                return
        finally:
            connection.close()
    stats.failures.append(f"{number}: gave up after {CONNECT_ATTEMPTS} connections")


async def _handshake(connection: AgentConnection, number: int, stats: FleetStats) -> bool:
    for payload in (control.build_startup("v4.14.7"), KEEPALIVE):
        connection.send(payload)
        reply = await connection.receive(timeout=30)
        if reply != control.Ack():
            stats.failures.append(f"{number}: handshake answered {reply!r}")
            return False
    return True


async def _alive(
    connection: AgentConnection, number: int, stop: asyncio.Event, stats: FleetStats, interval: float | None
) -> bool:
    """True when told to stop; False when the connection must be made again."""
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while True:
            receiving = asyncio.ensure_future(connection.received.get())
            timer = asyncio.ensure_future(asyncio.sleep(interval if interval is not None else 3600))
            done, _ = await asyncio.wait({receiving, stopping, timer}, return_when=asyncio.FIRST_COMPLETED)
            timer.cancel()
            if receiving not in done:
                receiving.cancel()
            if stopping in done:
                return True
            if receiving in done:
                message = receiving.result()
                if isinstance(message, control.ForceReconnect):
                    stats.reconnects[number] = stats.reconnects.get(number, 0) + 1
                    return False
                if message == control.Ack():
                    stats.acks[number] = stats.acks.get(number, 0) + 1
                    continue
                if message is None:
                    stats.failures.append(f"{number}: connection closed by the manager")
                    return False
                continue
            if not stats.quiet:
                connection.send(KEEPALIVE)
                stats.sent[number] = stats.sent.get(number, 0) + 1
    finally:
        stopping.cancel()
