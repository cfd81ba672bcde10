"""`agentpulse agent` processes against a real manager: statuses, the state file, the counter, probes."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

from agentpulse.agent.home import init_agent_home
from agentpulse.agent.sysinfo import this_machine
from agentpulse.wire import control
from agentpulse.wire.counters import SenderCounter
from agentpulse.wire.frames import FrameDecoder, encode_frame
from agentpulse.wire.keys import AgentKey, KeysFile
from agentpulse.wire.secure import AgentCipher, CipherKind, split_header
from tests.e2e.harness import (
    LOOPBACK,
    AgentFactory,
    AgentProcess,
    ManagerProcess,
    ManagerSettings,
    wait_until,
)

STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
STATE_FILE = re.compile(
    rf"""# State file for wazuh-agentd

# Agent status:
# - pending:      waiting to get connected\.
# - connected:    connection established with manager in the last 1 seconds\.
# - disconnected: connection lost or no ACK received in the last 60 seconds\.
status='connected'

# Last time a keepalive was sent
last_keepalive='{STAMP}'

# Last time a control message was received
last_ack='{STAMP}'

# Number of generated events
msg_count='1'

# Number of messages \(events \+ control messages\) sent to the manager
msg_sent='\d+'

# Number of events currently buffered
# Empty if anti-flooding mechanism is disabled
msg_buffer='0'
"""
)


def state_text(agent: AgentProcess) -> str:
    path = agent.home.agentd_state
    return path.read_text() if path.exists() else ""


def test_agent_becomes_active_and_its_state_file_says_connected(
    manager: ManagerProcess, agent_process: AgentFactory
) -> None:
    (key,) = manager.add_agents(1)
    manager.start()
    agent = agent_process(key)
    agent.start()
    manager.wait_for(key.number, "active", 0)
    # Connected, a keep-alive sent and an ack received since: every field is set.
    wait_until(lambda: STATE_FILE.fullmatch(state_text(agent)) is not None, "a connected state file")
    row = manager.query("SELECT version, os_uname, ip FROM agent WHERE id = ?", key.number)[0]
    assert row["version"] == "Wazuh v4.14.7"
    assert row["ip"] == LOOPBACK
    assert row["os_uname"] == this_machine().split(" [", 1)[0]


def test_sigterm_sends_shutdown_and_the_manager_shows_code_3(
    manager: ManagerProcess, agent_process: AgentFactory
) -> None:
    (key,) = manager.add_agents(1)
    manager.start()
    agent = agent_process(key)
    agent.start()
    manager.wait_for(key.number, "active", 0)
    assert agent.terminate() == 0
    manager.wait_for(key.number, "disconnected", 3, timeout=5)
    assert manager.history(key.number) == [
        ("never_connected", "pending", 0),
        ("pending", "active", 0),
        ("active", "disconnected", 3),
    ]
    assert "status='disconnected'" in state_text(agent)


def test_killed_agent_shows_code_6_within_the_grace(
    manager: ManagerProcess, agent_process: AgentFactory
) -> None:
    (key,) = manager.add_agents(1)
    manager.start()
    agent = agent_process(key)
    agent.start()
    manager.wait_for(key.number, "active", 0)
    agent.kill()
    took = manager.wait_for(key.number, "disconnected", 6, timeout=5)
    assert took <= manager.settings.connection_grace + 1.0


def test_restarted_agent_keeps_counting_its_messages(
    manager: ManagerProcess, agent_process: AgentFactory
) -> None:
    (key,) = manager.add_agents(1, ip=LOOPBACK)  # a single-host key: messages carry no !id! prefix
    manager.start()
    agent = agent_process(key)
    agent.start()
    manager.wait_for(key.number, "active", 0)
    assert agent.terminate() == 0
    before = agent.counter()
    assert (before.global_counter, before.local_counter) > (0, 2)  # startup, started event, keep-alive, ...

    agent.start()
    wait_until(lambda: manager.history(key.number)[-1] == ("pending", "active", 0), "active again")
    wait_until(lambda: agent.counter().local_counter > before.local_counter + 2, "more messages")
    agent.kill()  # the counter is on disk after every message, not only at a clean exit
    after = agent.counter()
    assert (after.global_counter, after.local_counter) > (before.global_counter, before.local_counter)
    assert agent.home.sender_counter.read_bytes().startswith(after.to_text())
    assert f"sender counter at {before.global_counter}:{before.local_counter}" in agent.output()


def test_agent_answers_the_manager_probe_and_stays_active(
    manager: ManagerProcess, agent_process: AgentFactory
) -> None:
    manager.settings = ManagerSettings(keepalive_enabled=True, keepalive_interval=1, keepalive_timeout=3)
    (key,) = manager.add_agents(1)
    manager.start()
    agent = agent_process(key, notify_time=10)
    agent.start()
    manager.wait_for(key.number, "active", 0)
    time.sleep(manager.settings.keepalive_timeout + 1.5)  # silent longer than the timeout, but for probes
    assert manager.status(key.number) == ("active", 0)
    assert [change[1] for change in manager.history(key.number)] == ["pending", "active"]
    (row,) = manager.query("SELECT state_json FROM agent_runtime WHERE agent_id = ?", key.number)
    state = json.loads(row["state_json"])
    assert state["status"] == "connected"
    assert state["msg_count"] == 1
    assert state["buffer_enabled"] is True
    assert agent.terminate() == 0
    manager.wait_for(key.number, "disconnected", 3, timeout=5)


def test_agent_without_a_key_exits_1_with_a_clear_message(tmp_path: Path) -> None:
    """With enrolment off: with it on (the default), an agent without a key enrols first."""
    home = init_agent_home(tmp_path / "agent", LOOPBACK, 1514, None, enrollment={"enabled": False})
    result = subprocess.run(
        [sys.executable, "-m", "agentpulse", "agent", "--home", str(home.root)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "client.keys: no active agent key" in result.stderr


# -- against a scripted manager: what the real one never sends ---------------------------------------------


Heard = tuple[int, SenderCounter, control.FromAgent]  # connection number, message counter, message


class FakeManager:
    """Just enough of a manager to script replies. It hears every message of the agent, in order."""

    def __init__(self, key: AgentKey, protocol: str) -> None:
        self.cipher = AgentCipher.for_key(key.id, key.name, key.key)
        self.tcp = protocol == "tcp"
        self.heard: asyncio.Queue[Heard] = asyncio.Queue()
        self.counter = SenderCounter()
        self.connections = 0
        self.reply_cipher = CipherKind.AES
        self.port = 0
        self._tcp: asyncio.Transport | None = None
        self._server: asyncio.Server | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._peer: tuple[str, int] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.tcp:
            self._server = await loop.create_server(lambda: _FakeTcp(self), LOOPBACK, 0)
            self.port = self._server.sockets[0].getsockname()[1]
        else:
            self._udp, _ = await loop.create_datagram_endpoint(
                lambda: _FakeUdp(self), local_addr=(LOOPBACK, 0)
            )
            self.port = self._udp.get_extra_info("sockname")[1]

    def close(self) -> None:
        for transport in (self._tcp, self._udp, self._server):
            if transport is not None:
                transport.close()

    def received(self, data: bytes, connection: int) -> None:
        envelope = split_header(data)
        self.reply_cipher = envelope.cipher
        message = self.cipher.open(envelope)
        counter = SenderCounter(message.global_counter, message.local_counter)
        self.heard.put_nowait((connection, counter, control.parse_from_agent(message.payload)))

    def send(self, payload: bytes) -> None:
        global_counter, local_counter = self.counter.advance()
        sealed = self.cipher.seal(
            payload,
            cipher=self.reply_cipher,
            rand=0,
            global_counter=global_counter,
            local_counter=local_counter,
        )
        if self._tcp is not None:
            self._tcp.write(encode_frame(sealed))
        elif self._udp is not None and self._peer is not None:
            self._udp.sendto(sealed, self._peer)

    def drop(self) -> None:
        assert self._tcp is not None
        self._tcp.close()

    async def hear(self, timeout: float = 10.0) -> Heard:
        return await asyncio.wait_for(self.heard.get(), timeout)

    async def hear_past_keepalives(self, timeout: float = 10.0) -> Heard:
        """The next message that is not a keep-alive (the agent sends those whenever they are due)."""
        while True:
            heard = await self.hear(timeout)
            if not isinstance(heard[2], control.Keepalive):
                return heard


class _FakeTcp(asyncio.Protocol):
    def __init__(self, fake: FakeManager) -> None:
        self.fake = fake
        self.decoder = FrameDecoder()
        self.number = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.fake.connections += 1
        self.number = self.fake.connections
        self.fake._tcp = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        for frame in self.decoder.feed(data):
            self.fake.received(frame, self.number)


class _FakeUdp(asyncio.DatagramProtocol):
    def __init__(self, fake: FakeManager) -> None:
        self.fake = fake

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        peer = (str(addr[0]), int(addr[1]))
        if peer != self.fake._peer:
            self.fake._peer = peer
            self.fake.connections += 1
        self.fake.received(data, self.fake.connections)


def fake_key(name: str = "fake-agent") -> AgentKey:
    return KeysFile.parse("").add(name)


def test_udp_agent_retries_after_err_acks_requests_and_says_goodbye(agent_process: AgentFactory) -> None:
    key = fake_key()

    async def scenario() -> None:
        fake = FakeManager(key, "udp")
        await fake.start()
        agent = agent_process(
            key, port=fake.port, protocol="udp", crypto_method="blowfish", retry_interval=0.2, notify_time=10
        )
        agent.start()
        counters = []
        try:
            _, counter, startup = await fake.hear()
            counters.append(counter)
            assert startup == control.Startup("v4.14.7")
            fake.send(control.build_error(control.ERR_NEWER_VERSION))
            _, counter, startup = await fake.hear()  # retried retry_interval later, from a new socket
            counters.append(counter)
            assert startup == control.Startup("v4.14.7")
            assert fake.reply_cipher is CipherKind.BLOWFISH
            fake.send(control.ACK)
            _, counter, started = await fake.hear()
            counters.append(counter)
            assert started == control.AgentEvent(b"1:wazuh-agent:ossec: Agent started: 'fake-agent->any'.")
            _, counter, keepalive = await fake.hear()
            counters.append(counter)
            assert isinstance(keepalive, control.Keepalive)
            assert keepalive.agent_ip == LOOPBACK
            assert keepalive.merged_sum == "x"

            fake.send(control.build_request("1f2e", "agent", control.GETSTATE))
            _, counter, ack = await fake.hear()
            counters.append(counter)
            assert ack == control.RequestReply("1f2e", "ack")
            _, counter, reply = await fake.hear()
            counters.append(counter)
            assert isinstance(reply, control.RequestReply)
            assert reply.counter == "1f2e"
            state = json.loads(reply.response)
            assert state["error"] == 0
            assert state["data"]["status"] == "connected"
            assert state["data"]["msg_count"] == 1
            assert state["data"]["msg_sent"] == 5  # two startups, the started event, a keep-alive, the ack

            fake.send(control.build_request("20", "logcollector", "getconfig"))
            assert (await fake.hear())[2] == control.RequestReply("20", "ack")
            _, counter, reply = await fake.hear()
            counters.append(counter)
            assert reply == control.RequestReply("20", "err Unrecognized command")

            assert await asyncio.to_thread(agent.terminate) == 0
            _, counter, shutdown = await fake.hear()
            counters.append(counter)
            assert shutdown == control.Shutdown()
        finally:
            fake.close()
        pairs = [(counter.global_counter, counter.local_counter) for counter in counters]
        assert pairs == sorted(pairs) and len(set(pairs)) == len(pairs)
        assert agent.counter() == counters[-1]
        assert "Agent version must be lower or equal to manager version" in agent.output()

    asyncio.run(scenario())


def test_tcp_agent_reconnects_on_force_reconnect_silence_and_a_dropped_connection(
    agent_process: AgentFactory,
) -> None:
    key = fake_key()

    async def scenario() -> None:
        fake = FakeManager(key, "tcp")
        await fake.start()
        agent = agent_process(key, port=fake.port, notify_time=1, time_reconnect=2)
        agent.start()
        try:
            connection, _, startup = await fake.hear()
            assert (connection, startup) == (1, control.Startup("v4.14.7"))
            fake.send(control.ACK)
            assert isinstance((await fake.hear())[2], control.AgentEvent)
            assert isinstance((await fake.hear())[2], control.Keepalive)

            fake.send(control.FORCE_RECONNECT)
            connection, _, startup = await fake.hear_past_keepalives()
            assert (connection, startup) == (2, control.Startup("v4.14.7"))
            fake.send(control.ACK)
            acked = time.monotonic()
            # The started event is once per process: after a reconnect only keep-alives follow.
            assert isinstance((await fake.hear())[2], control.Keepalive)

            # Keep-alives go unanswered: after time-reconnect (2 s) of silence, a new connection.
            connection, _, startup = await fake.hear_past_keepalives()
            silent = time.monotonic() - acked
            assert (connection, startup) == (3, control.Startup("v4.14.7"))
            assert 1.9 <= silent <= 4.0  # time-reconnect is 2 s; the rest is room for a loaded machine
            fake.send(control.ACK)

            fake.drop()
            connection, _, startup = await fake.hear_past_keepalives()
            assert (connection, startup) == (4, control.Startup("v4.14.7"))
            fake.send(control.ACK)
            assert isinstance((await fake.hear())[2], control.Keepalive)

            assert await asyncio.to_thread(agent.terminate) == 0
            assert (await fake.hear_past_keepalives())[2] == control.Shutdown()
        finally:
            fake.close()

    asyncio.run(scenario())
