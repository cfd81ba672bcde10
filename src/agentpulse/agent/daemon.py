"""The agent's main loop: `agentpulse agent`, a Wazuh 4.x agentd that only keeps its connection alive.

`AgentDaemon` hand-shakes, sends keep-alives every `notify_time`, answers `#!-req` probes and reconnects
when told to, when dropped or when the manager goes silent; without a key, or after handshakes keep failing,
it enrols first (`agent/enrol.py`). The danger is the sender counter: it must grow across restarts or a
manager with `verify_msg_id` locks the agent out (see `AgentDaemon._send`).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import signal
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from agentpulse.agent import enrol
from agentpulse.agent.config import ClientConfig, ServerAddress
from agentpulse.agent.connection import AgentCodec, AgentConnection
from agentpulse.agent.logcollector import POLL_INTERVAL, LogCollector
from agentpulse.agent.shared import SharedReceiver, truncate
from agentpulse.agent.state import (
    CONNECTED,
    DISCONNECTED,
    AgentState,
    getstate_reply,
    render_state_file,
    write_state_file,
)
from agentpulse.agent.sysinfo import AGENT_VERSION, shared_sums, this_machine
from agentpulse.backoff import backoff_delay
from agentpulse.paths import Home
from agentpulse.rids import SenderCounterFile, read_sender_counter
from agentpulse.wire import control
from agentpulse.wire.errors import WireError
from agentpulse.wire.keys import AgentKey
from agentpulse.wire.secure import CipherKind

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT: Final = 60.0  # agent.recv_timeout: how long a startup waits for its ack
CONNECT_TIMEOUT: Final = 10.0
BACKOFF_START: Final = 1.0  # after a pass over every server failed; doubles per failed pass
BACKOFF_MAX: Final = 60.0
BACKOFF_JITTER: Final = 0.2  # +-20 %
RECONNECT_PAUSE: Final = 1.0  # after the manager closed the connection, as agentd's connect_server() sleeps
SHUTDOWN_FLUSH: Final = 2.0  # how long the shutdown message may take to leave before the process exits
STARTED_EVENT: Final = "1:wazuh-agent:ossec: Agent started: '{name}->{ip}'."  # OS_AG_STARTED, LOCALFILE_MQ


def keepalive_labels(labels: Iterable[tuple[str, str, bool, bool]]) -> tuple[tuple[str, str], ...]:
    """`labels_format()`: the key part of each line is `[#][!]"<key>"` (system, hidden)."""
    return tuple(
        (f'{"#" if system else ""}{"!" if hidden else ""}"{key}"', value)
        for key, value, hidden, system in labels
    )


class _End(enum.Enum):
    """Why a connected session ended."""

    DROPPED = "connection lost"
    SILENT = "nothing received for time-reconnect seconds"
    FORCED = "force_reconnect received"


@dataclass(frozen=True, slots=True)
class _ServerConnection:
    connection: AgentConnection
    server: ServerAddress


def _where(server: ServerAddress) -> str:
    return f"{server.address}:{server.port}/{server.protocol}"


class AgentDaemon:
    """One agent. `run()` until `stop()`; `main()` adds the SIGTERM/SIGINT handlers.

    The plan: connect and hand-shake (startup, wait for `#!-agent ack `), send the "Agent started" event
    once per process, then one keep-alive right away and one every `notify_time` on the monotonic clock;
    answer `#!-req` probes; reconnect (with a new startup) on `#!-force_reconnect`, on a dropped connection,
    or after `time-reconnect` seconds without a word from the manager.

    One task does the work and waits on exactly one thing at a time (the next message, bounded by the next
    keep-alive or the silence deadline), so nothing polls. SIGTERM cancels that task wherever it is; `run()`
    then says `#!-agent shutdown ` if a handshake was done, and returns. The state file
    (`wazuh-agentd.state`) is written off the loop.
    """

    def __init__(
        self,
        home: Home,
        config: ClientConfig,
        key: AgentKey | None,
        *,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
        uname: str | None = None,
    ) -> None:
        self.home = home
        self.config = config
        self.key = key  # None until enrolment gives one
        self.handshake_timeout = handshake_timeout
        self.uname = uname
        self.cipher = CipherKind(config.crypto_method)
        self.labels = keepalive_labels(config.labels)
        self.state = AgentState()
        self.counter = read_sender_counter(home.sender_counter)
        self._counter_file: SenderCounterFile | None = None
        self._stop = asyncio.Event()
        self._connection: AgentConnection | None = None  # the open one, handshaken or not
        self._handshaken = False
        self._started_sent = False
        self._server_index = 0  # where the next connection attempt starts: the last server that worked
        self.shared = SharedReceiver(home.shared_dir)  # pushed merged.mg (reference 15.5)
        self.logs = LogCollector(config.localfiles) if config.localfiles else None

    def stop(self) -> None:
        self._stop.set()

    async def main(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self.stop)
        await self.run()

    async def run(self) -> None:
        if self.uname is None:
            self.uname = await asyncio.to_thread(this_machine)
        self.home.rids_dir.mkdir(parents=True, exist_ok=True)
        self.home.run_dir.mkdir(parents=True, exist_ok=True)
        self._counter_file = SenderCounterFile(self.home.sender_counter)
        log.info(
            "Agent %s starting, sender counter at %d:%d",
            f"{self.key.id} ({self.key.name})" if self.key is not None else "without a key",
            self.counter.global_counter,
            self.counter.local_counter,
        )
        writer = None
        if self.config.state_interval > 0:
            writer = asyncio.create_task(self._write_states(), name="state-writer")
        work = asyncio.create_task(self._work(), name="agent")
        stopper = asyncio.create_task(self._stop.wait(), name="stop")
        try:
            done, _ = await asyncio.wait({work, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if work in done:
                work.result()  # the work loop never ends by itself: this raises what killed it
        finally:
            self._stop.set()
            for task in (work, stopper):
                task.cancel()
            await asyncio.gather(work, stopper, return_exceptions=True)
            await self._say_goodbye()
            if writer is not None:
                # Not cancelled: a write in flight finishes first, so the last one below wins.
                await asyncio.gather(writer, return_exceptions=True)
                self.state.status = DISCONNECTED
                await self._write_state()
            self._counter_file.close()
            log.info("Agent %s stopped", self.key.id if self.key is not None else "(no key)")

    # -- the connection life cycle ------------------------------------------------------------------------

    async def _work(self) -> None:
        if self.key is None:
            await self._enrol_until_done()
        while True:
            link = await self._connect()
            end = await self._session(link)
            self.state.status = DISCONNECTED
            self._handshaken = False
            link.connection.close()
            self._connection = None
            log.warning("Disconnected from %s: %s; reconnecting", _where(link.server), end.value)
            if end is _End.DROPPED:
                await asyncio.sleep(RECONNECT_PAUSE)

    async def _connect(self) -> _ServerConnection:
        """Try every server in turn, starting with the last one that worked, until one acks a startup.

        Each server is tried `max_retries` times `retry_interval` apart, then the next one; after a pass over
        all of them the agent backs off (doubling, capped, with jitter so a fleet does not come back in
        lock-step).
        """
        servers = self.config.servers
        failed_passes = 0
        while True:
            for offset in range(len(servers)):
                index = (self._server_index + offset) % len(servers)
                server = servers[index]
                for attempt in range(server.max_retries):
                    if attempt:
                        await asyncio.sleep(server.retry_interval)
                    connection = await self._handshake(server)
                    if connection is not None:
                        self._server_index = index
                        return _ServerConnection(connection, server)
                if self.config.enrollment.enabled and await self._enrol_once(server.address):
                    # the key may have been refused: a new one, then one more handshake (start_agent())
                    connection = await self._handshake(server)
                    if connection is not None:
                        self._server_index = index
                        return _ServerConnection(connection, server)
                if len(servers) > 1:
                    log.info(
                        "Server %s failed %d attempts: trying the next one",
                        _where(server),
                        server.max_retries,
                    )
            failed_passes += 1
            delay = backoff_delay(failed_passes, base=BACKOFF_START, cap=BACKOFF_MAX, jitter=BACKOFF_JITTER)
            log.warning("Unable to connect to any server; trying again in %.1f s", delay)
            await asyncio.sleep(delay)

    # -- enrolment ----------------------------------------------------------------------------------------

    async def _enrol_until_done(self) -> None:
        """No key: ask `manager_address`, else every server in turn, until one gives a key."""
        enrollment = self.config.enrollment
        addresses = [enrollment.manager_address] if enrollment.manager_address else []
        addresses = addresses or list(dict.fromkeys(server.address for server in self.config.servers))
        failed_rounds = 0
        while True:
            for address in addresses:
                if await self._enrol_once(address):
                    return
            failed_rounds += 1
            delay = enrol.retry_delay(failed_rounds)
            log.info("Unable to enrol with any manager; trying again in %g s", delay)
            await asyncio.sleep(delay)

    async def _enrol_once(self, address: str) -> bool:
        """One enrolment at `address` (the enrolment port); on a key: saved, taken, and the delay waited."""
        enrollment = self.config.enrollment
        name = enrol.agent_name(enrollment)
        if self.key is None and name == "localhost":
            log.error("Cannot enrol: the agent name is 'localhost' (set <enrollment><agent_name>)")
            return False
        root = self.home.root
        try:
            context = await asyncio.to_thread(enrol.client_context, enrollment, root)
        except (OSError, ssl.SSLError) as error:
            log.error("Cannot enrol: the TLS settings of <enrollment> cannot be used: %s", error)
            return False
        password_path = enrol.resolve(root, enrollment.authorization_pass_path)
        password = await asyncio.to_thread(enrol.read_password, password_path)
        request = enrol.build_request(enrollment, name, password=password, existing=self.key)
        log.info("Requesting a key from server: %s:%d", address, enrollment.port)
        try:
            key = await enrol.request_key(address, enrollment.port, request, context)
        except enrol.EnrolmentError as error:
            log.error("%s (from manager)", error.response)
            return False
        except (OSError, ssl.SSLError, TimeoutError) as error:
            log.error("Unable to enrol at %s:%d: %s", address, enrollment.port, str(error) or "timed out")
            return False
        await asyncio.to_thread(enrol.save_key, self.home.client_keys, key)
        self.key = key
        log.info("Valid key received: agent %s (%s)", key.id, key.name)
        await asyncio.sleep(enrollment.delay_after_enrollment)
        return True

    # -- the handshake ------------------------------------------------------------------------------------

    async def _handshake(self, server: ServerAddress) -> AgentConnection | None:
        """Connect, send startup, wait for the ack. The open connection, or None (already closed)."""
        assert self.key is not None
        codec = AgentCodec(self.key, self.cipher, self.counter, tcp=server.protocol == "tcp")
        log.info("Trying to connect to server (%s)", _where(server))
        try:
            connection = await AgentConnection.open(
                codec, server.address, server.port, timeout=CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError) as error:
            log.error("Unable to connect to %s: %s", _where(server), str(error) or "timed out")
            return None
        self._connection = connection
        reply: control.FromManager | WireError | str | None
        try:
            self._send(connection, control.build_startup(AGENT_VERSION))
            reply = await connection.receive(self.handshake_timeout)
        except ConnectionError:
            reply = None
        except TimeoutError:
            reply = f"no reply within {self.handshake_timeout:g} s"
        if isinstance(reply, control.Ack):
            self._handshaken = True
            log.info("Connected to the server (%s)", _where(server))
            return connection
        if isinstance(reply, control.ErrorReply):
            log.error("Server %s refused the startup: %s", _where(server), reply.message)
        elif reply is None:
            log.warning("Server %s closed the connection during the handshake", _where(server))
        elif isinstance(reply, WireError):
            log.warning("Unreadable handshake reply from %s: %s", _where(server), reply)
        elif isinstance(reply, str):
            log.warning("Server %s: %s", _where(server), reply)
        else:
            log.warning("Server %s answered the startup with %s, not an ack", _where(server), reply)
        connection.close()
        self._connection = None
        return None

    async def _session(self, link: _ServerConnection) -> _End:
        connection = link.connection
        self.state.status = CONNECTED
        loop = asyncio.get_running_loop()
        notify_time = self.config.notify_time
        time_reconnect = self.config.time_reconnect
        last_received = loop.time()  # the ack counts (agentd's available_server)
        next_keepalive = last_received
        next_poll = last_received
        try:
            if not self._started_sent and self.key is not None:
                self._send(connection, STARTED_EVENT.format(name=self.key.name, ip=self.key.ip.text).encode())
                self._started_sent = True
                self.state.msg_count += 1
            while True:
                now = loop.time()
                if now >= next_keepalive:
                    await self._send_keepalive(connection)
                    next_keepalive += notify_time
                    if next_keepalive <= now:  # the loop was held up: do not send a burst
                        next_keepalive = now + notify_time
                    continue
                if self.logs is not None and now >= next_poll:
                    await self._send_logs(connection)
                    next_poll = now + POLL_INTERVAL
                    continue
                silent_until = last_received + time_reconnect
                if now >= silent_until:
                    return _End.SILENT
                wake = min(next_keepalive, silent_until, next_poll if self.logs is not None else silent_until)
                try:
                    message = await connection.receive(max(0.0, wake - now))
                except TimeoutError:
                    continue
                if message is None:
                    return _End.DROPPED
                if isinstance(message, WireError):
                    log.warning("Unreadable message from the server (%s): %s", _where(link.server), message)
                    continue
                last_received = loop.time()
                if not isinstance(message, control.AgentEvent):
                    self.state.last_ack = time.time()
                end = await self._on_message(link, message)
                if end is not None:
                    return end
        except ConnectionError:
            return _End.DROPPED
        finally:
            self.shared.abandon()  # a push cut by the connection's end is never verified

    async def _on_message(self, link: _ServerConnection, message: control.FromManager) -> _End | None:
        """One message from the manager on a handshaken connection; an `_End` when the session ends."""
        if await self._shared_file(message):
            return None
        if isinstance(message, control.Request):
            self._answer(link.connection, message)
        elif isinstance(message, control.ForceReconnect):
            return _End.FORCED
        elif isinstance(message, control.ErrorReply):
            log.warning("Server %s says: %s", _where(link.server), message.message)
        elif not isinstance(message, control.Ack):
            log.debug("Ignoring a message from the server: %s", message)
        return None

    async def _shared_file(self, message: control.FromManager) -> bool:
        """A pushed file's messages (receive_msg()); True when `message` was one of them. Ack, requests and
        force_reconnect leave an open file open; any other control message closes it unverified."""
        if isinstance(message, control.FileUpdate):
            path = self.shared.begin(message.md5, message.name)
            if path is not None:
                await asyncio.to_thread(truncate, path)
            return True
        if isinstance(message, control.FileClose):
            closed = self.shared.close()
            if closed is not None:
                await asyncio.to_thread(self.shared.finish, *closed)
            return True
        if isinstance(message, control.AgentEvent):
            if self.shared.receiving:
                self.shared.append(message.payload)
                return True
            return False
        if not isinstance(message, control.Ack | control.Request | control.ForceReconnect):
            if self.shared.receiving:
                log.warning("Unknown message received from server while a shared file was open")
            self.shared.abandon()
        return False

    async def _send_logs(self, connection: AgentConnection) -> None:
        """The lines the tailed files gained since the last poll, as logcollector events."""
        assert self.logs is not None
        for event in await asyncio.to_thread(self.logs.poll):
            self._send(connection, event)
            self.state.msg_count += 1

    # -- what the agent says ------------------------------------------------------------------------------

    def _send(self, connection: AgentConnection, payload: bytes) -> None:
        """Seal and send; persist the counter the message used. Raises ConnectionError when closed.

        The counter must grow across restarts or a manager with `verify_msg_id` locks the agent out, so
        every sealed message is followed by a rewrite of `sender_counter` (one `pwrite()`, see
        `agentpulse.rids`).
        """
        connection.send(payload)
        if self._counter_file is not None:
            self._counter_file.store(self.counter)
        self.state.msg_sent += 1

    async def _send_keepalive(self, connection: AgentConnection) -> None:
        sums = await asyncio.to_thread(shared_sums, self.home)
        agent_ip = None
        if connection.transport is not None:
            sockname = connection.transport.get_extra_info("sockname")
            if isinstance(sockname, tuple) and sockname:
                agent_ip = str(sockname[0])
        payload = control.build_keepalive(
            self.uname or "",
            merged_sum=sums.merged_sum,
            labels=self.labels,
            agent_ip=agent_ip,
            config_sum=sums.config_sum,
        )
        self._send(connection, payload)
        self.state.last_keepalive = time.time()

    def _answer(self, connection: AgentConnection, request: control.Request) -> None:
        """agcom_dispatch(): `getstate` for the agent itself; anything else is not something we run."""
        if not connection.codec.tcp:
            self._send(connection, control.build_request_reply(request.counter, control.REQUEST_ACK))
        if control.is_getstate(request):
            response = getstate_reply(self.state)
        else:
            log.debug("Request %s %s %s: unrecognized", request.counter, request.target, request.payload[:64])
            response = control.ERR_UNRECOGNIZED
        self._send(connection, control.build_request_reply(request.counter, response))

    async def _say_goodbye(self) -> None:
        """`#!-agent shutdown ` on a handshaken connection, then close it and let the bytes leave."""
        connection = self._connection
        if connection is None:
            return
        if self._handshaken:
            try:
                self._send(connection, control.SHUTDOWN)
            except ConnectionError:
                pass
            else:
                log.info("Sent the shutdown message to the server")
        connection.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(connection.closed.wait(), SHUTDOWN_FLUSH)
        self._connection = None
        self._handshaken = False

    # -- the state file -----------------------------------------------------------------------------------

    async def _write_states(self) -> None:
        """Every state_interval seconds until stop() (Wazuh's state_main())."""
        while True:
            await self._write_state()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.config.state_interval)
                return

    async def _write_state(self) -> None:
        text = render_state_file(
            self.state, notify_time=self.config.notify_time, time_reconnect=self.config.time_reconnect
        )
        try:
            await asyncio.to_thread(write_state_file, self.home.agentd_state, text)
        except OSError as error:
            log.error("Cannot write %s: %s", self.home.agentd_state, error)
