"""`FleetProcess`: the agents of one OS process, their connections and the one loop that drives them.

A tick loop (10 ms) advances a `TimingWheel` and acts for the agents whose deadline came: connect (spread
over `ramp`, CONNECTS_IN_FLIGHT at most), give up on a handshake, send a keep-alive (each agent at its own
phase). Replies are handled as they arrive: acks are timed, `getstate` answered, `#!-force_reconnect`
obeyed; what happens is counted in a `tally.Tally`. The danger is measuring the simulator, not the
manager: no task, timer or log line per agent.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from typing import Final

from agentpulse.agent.connection import AgentCodec
from agentpulse.agent.state import CONNECTED, AgentState, getstate_reply
from agentpulse.backoff import backoff_delay, jittered
from agentpulse.simulator.agents import (
    CONNECTING,
    HANDSHAKE,
    QUEUED,
    RUNNING,
    SILENT,
    STOPPED,
    WAITING,
    SimAgent,
    keepalive_payload,
)
from agentpulse.simulator.connections import (
    WRITE_BUFFER_LIMIT,
    SimConnection,
    TcpConnection,
    UdpConnection,
    connect_error,
)
from agentpulse.simulator.eventgen import EventSchedule, seal_event
from agentpulse.simulator.plan import (
    FD_HEADROOM,
    AgentTiming,
    Role,
    SimulatorConfig,
    Transport,
    cipher_for,
    raise_fd_limit,
    role_for,
    source_addresses,
    source_for,
)
from agentpulse.simulator.snapshot import REPORT_INTERVAL, Snapshot, add_count
from agentpulse.simulator.tally import Tally, count_live
from agentpulse.simulator.wheel import TimingWheel
from agentpulse.wire import control
from agentpulse.wire.counters import U32_MAX, SenderCounter
from agentpulse.wire.errors import WireError
from agentpulse.wire.keys import AgentKey

TICK: Final = 0.01  # the scheduling loop's period (s)
WHEEL_SLOTS: Final = 4096  # 41 s per revolution at 10 ms: most deadlines land in the current one
# Per process: connects waiting in the manager's accept queue count too (real agents each have their own).
CONNECTS_IN_FLIGHT: Final = 4096
UDP_HANDSHAKE: Final = 3.0  # a UDP startup without an ack is sent again after this at most (lost datagram)
RECONNECT_PAUSE: Final = 1.0  # after the manager dropped an acked connection, as agentd sleeps
RECONNECT_JITTER: Final = 0.2
ACK_TIMEOUT_MIN: Final = 10.0  # a keep-alive unacked for max(this, 2 x interval) is an error
MAX_PENDING: Final = 8  # keep-alives awaiting their ack, per agent
CLOSE_GRACE: Final = 2.0  # at the end, how long closed sockets may take to flush
# With events, how long the end waits for the manager to have read what was written: a manager that
# paused reading leaves them in our buffers and its kernel's, and a close would lose them there (a close
# with unread replies is a reset), so `events_sent` would count events the manager never received.
DELIVERY_GRACE: Final = 60.0
RECONNECT: Final = "reconnect"  # the retry kind of a dropped acked connection: its server is tried again


def retry_delay(timing: AgentTiming, failures: int) -> float:
    """After the `failures`-th failed attempt in a row: `retry_interval` for the first `max_retries`, then
    doubling up to `retry_max`; jittered."""
    beyond = failures - timing.max_retries
    if beyond <= 0:
        return jittered(timing.retry_interval, timing.jitter)
    return backoff_delay(beyond + 1, base=timing.retry_interval, cap=timing.retry_max, jitter=timing.jitter)


class FleetProcess:
    """The agents of one process and its scheduling loop. `run()` once; `stop()` from anywhere on the loop."""

    def __init__(
        self,
        config: SimulatorConfig,
        members: Sequence[tuple[int, AgentKey]],
        report: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self.config = config
        self.tcp = config.protocol == Transport.TCP
        self.report = report
        timing = self.timing = config.timing
        self.handshake_timeout = timing.recv_timeout if self.tcp else min(timing.recv_timeout, UDP_HANDSHAKE)
        self.ack_timeout = max(ACK_TIMEOUT_MIN, 2 * config.interval)
        # agentd forces time-reconnect to 3 x notify_time when it is not above notify_time
        self.time_reconnect = (
            timing.time_reconnect if timing.time_reconnect > config.interval else 3 * config.interval
        )
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
                config.merged_sum,
            )
            for index, key in members
        ]
        self.servers = config.servers
        if config.spread:
            for agent in self.agents:
                agent.server = agent.index % len(self.servers)
        self.server_names = [f"{host}:{port}" for host, port in self.servers]
        self.tally = Tally()
        for agent in self.agents:
            add_count(self.tally.ciphers, agent.codec.cipher_kind.value)
        self.wheel: TimingWheel[SimAgent] = TimingWheel(TICK, WHEEL_SLOTS, time.monotonic())
        self.queue: list[SimAgent] = []  # QUEUED agents, oldest first (consumed from `queue_head`)
        self.queue_head = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.stopping = False
        self.t0 = 0.0
        self.events = EventSchedule(config.events_per_agent, config.event_mix)
        self._running = (-math.inf, 0)  # (when, agents running) for the event rate
        self._event_cursor = 0
        self.ended_at: float | None = None

    # -- the loop -----------------------------------------------------------------------------------------

    def stop(self) -> None:
        self.stopping = True

    def mark_steady(self) -> None:
        """SIGUSR1: the steady figures (ack latency, rate) count from now (e.g. a change a test measures)."""
        self.tally.mark_steady(time.monotonic())

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
        ramp_end = now + (config.steady_from if config.steady_from is not None else config.ramp)
        next_report = now + REPORT_INTERVAL
        previous = time.monotonic()
        tally = self.tally
        try:
            while not self.stopping:
                now = time.monotonic()
                tally.tick.record(now - previous)
                previous = now
                if now >= deadline:
                    break
                if tally.steady_base is None and now >= ramp_end:
                    tally.mark_steady(now)
                if fail_time is not None and now >= fail_time:
                    fail_time = None
                    self.inject_failures(now)
                for agent in self.wheel.advance(now):
                    self.on_timer(agent, now)
                if self.events.rate:
                    self.send_events(self.events.due(now, self._running[1]))
                self.start_connects()
                if self.events.rate and now - self._running[0] >= 1.0:
                    self._running = (now, count_live(self.agents)[1])  # events go to the running agents only
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
            if self.events.rate:
                await self.delivered()
        finally:
            self.ended_at = time.monotonic()
            final = self.snapshot(self.ended_at, final=True)
            await self.close_all()
        return final

    async def delivered(self) -> None:
        """Until the manager has read what every connection wrote, bounded by DELIVERY_GRACE: the writes
        drain, then each running agent sends one more keep-alive, and its ack says the manager has handled
        everything before it (a connection's messages are handled in order). An agent whose ack did not
        come is counted (`undelivered_agents`): its events may not all be in."""
        deadline = time.monotonic() + DELIVERY_GRACE
        connections = [agent.connection for agent in self.agents if agent.connection is not None]
        while time.monotonic() < deadline and any(c.unsent() > WRITE_BUFFER_LIMIT for c in connections):
            await asyncio.sleep(0.1)
        running = [agent for agent in self.agents if agent.state == RUNNING and agent.connection is not None]
        for agent in running:
            agent.pending.clear()
            self.send_keepalive(agent)
        while time.monotonic() < deadline and any(agent.pending for agent in running):
            await asyncio.sleep(0.1)
        self.tally.undelivered_agents = sum(1 for agent in running if agent.pending)

    async def close_all(self) -> None:
        """Cancel connection attempts and close every socket; wait (bounded) for them to go."""
        self.stopping = True
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=CLOSE_GRACE)
        connections = [agent.connection for agent in self.agents if agent.connection is not None]
        for connection in connections:
            connection.close()
        deadline = time.monotonic() + CLOSE_GRACE
        while any(connection.up for connection in connections) and time.monotonic() < deadline:
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
            if agent.pending and now - agent.pending[0] > self.time_reconnect:
                self.retry(agent, "time_reconnect", now, 0.0)  # no answer for time-reconnect: start over
                return
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
        connection: SimConnection = TcpConnection(self, agent) if self.tcp else UdpConnection(self, agent)
        agent.connection = connection
        agent.state = CONNECTING
        task = asyncio.get_running_loop().create_task(self._open(agent, connection))
        agent.task = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        self.wheel.schedule(agent, time.monotonic() + self.timing.connect_timeout)

    async def _open(self, agent: SimAgent, connection: SimConnection) -> None:
        try:
            await connection.open(self.servers[agent.server])
        except asyncio.CancelledError:
            self._connect_ended(agent, connection, "connect_timeout")
            raise
        except OSError as error:
            self._connect_ended(agent, connection, connect_error(error))
            return
        self._connect_ended(agent, connection, None)
        self.on_connected(agent, connection)

    def _connect_ended(self, agent: SimAgent, connection: SimConnection, failure: str | None) -> None:
        if agent.connection is not connection:
            return
        agent.task = None
        if failure is not None and not self.stopping:
            self.retry(agent, failure, time.monotonic())

    def on_connected(self, agent: SimAgent, connection: SimConnection) -> None:
        if agent.connection is not connection or self.stopping or agent.state == STOPPED:
            connection.close()
            return
        if not agent.connected_once:
            agent.connected_once = True
            self.tally.connected += 1
        if agent.state == SILENT:  # stopped while connecting: the kernel finished the connect anyway
            connection.pause()
            return
        if agent.state != CONNECTING:  # the startup went with the connect (first_frame), maybe acked by now
            return
        self.send(agent, self.startup)
        self._handshake_begun(agent, connection)

    def first_frame(self, connection: SimConnection) -> bytes:
        agent = connection.agent
        if agent.connection is not connection or self.stopping or agent.state != CONNECTING:
            return b""
        frame = agent.codec.seal(self.startup)
        agent.messages_sent += 1
        self._handshake_begun(agent, connection)
        return frame

    def _handshake_begun(self, agent: SimAgent, connection: SimConnection) -> None:
        agent.startup_at = time.monotonic()
        if connection.connected_at:
            self.tally.connected_to_startup.record(agent.startup_at - connection.connected_at)
        agent.state = HANDSHAKE
        self.wheel.schedule(agent, agent.startup_at + self.handshake_timeout)

    def drop_connection(self, agent: SimAgent) -> None:
        if agent.task is not None:
            agent.task.cancel()
            agent.task = None
        connection, agent.connection = agent.connection, None
        if connection is not None:
            connection.close()
        agent.pending.clear()
        agent.keepalive_frame = None
        agent.receiving = None  # a push cut by the drop is never verified

    def retry(self, agent: SimAgent, kind: str, now: float, delay: float | None = None) -> None:
        """This attempt failed (refused, timed out, dropped): try again after a back-off."""
        self.drop_connection(agent)
        if agent.state in (SILENT, STOPPED):
            return
        add_count(self.tally.retries, kind)
        if kind != RECONNECT and len(self.servers) > 1:
            # This server did not take the agent: the next one in the list, as agentd does once a server
            # has used its attempts (one here). A dropped connection tries its server again first.
            agent.server = (agent.server + 1) % len(self.servers)
            self.tally.failovers += 1
        agent.failures += 1
        agent.state = WAITING
        if delay is None:
            delay = retry_delay(self.timing, agent.failures)
        self.wheel.schedule(agent, now + delay)

    def on_connection_lost(self, connection: SimConnection) -> None:
        agent = connection.agent
        if connection.closing or agent.connection is not connection or self.stopping:
            return
        state = agent.state
        if state == HANDSHAKE:  # closed without an ack: an unknown key (not loaded yet) or a refusal
            self.retry(agent, "refused", time.monotonic())
        elif state == RUNNING:
            self.error("connection_lost")
            self.retry(agent, RECONNECT, time.monotonic(), jittered(RECONNECT_PAUSE, RECONNECT_JITTER))

    def bad_stream(self, connection: SimConnection) -> None:
        self.error("bad_frame")
        self.retry(connection.agent, RECONNECT, time.monotonic(), RECONNECT_PAUSE)

    # -- messages -----------------------------------------------------------------------------------------

    def send(self, agent: SimAgent, payload: bytes) -> bool:
        connection = agent.connection
        if connection is None or not connection.write(agent.codec.seal(payload)):
            return False
        agent.messages_sent += 1
        return True

    def send_keepalive(self, agent: SimAgent) -> None:
        connection = agent.connection
        if connection is None:
            return
        now = time.monotonic()
        pending = agent.pending
        while pending and (now - pending[0] > self.ack_timeout or len(pending) >= MAX_PENDING):
            pending.pop(0)
            self.error("ack_timeout")
        data = agent.keepalive_frame or agent.codec.seal(agent.keepalive)
        if connection.write(data):
            pending.append(now)
            agent.messages_sent += 1
            self.tally.keepalives_sent += 1

    def send_events(self, count: int) -> None:
        """`count` events, one per running agent in turn (an agent whose socket is full is skipped)."""
        agents = self.agents
        tries = len(agents)
        while count > 0 and tries > 0:
            agent = agents[self._event_cursor]
            self._event_cursor = (self._event_cursor + 1) % len(agents)
            tries -= 1
            connection = agent.connection
            if agent.state != RUNNING or connection is None or not connection.writable():
                continue  # not sealed: a refused write would waste the generator's share of the cores
            if connection.write(seal_event(agent.codec, *self.events.next())):
                agent.messages_sent += 1
                self.tally.events_sent += 1
                count -= 1
                tries = len(agents)

    def on_message(self, connection: SimConnection, data: bytes) -> None:
        agent = connection.agent
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
                    self.tally.latency.record(now - agent.pending.pop(0))
                    self.tally.keepalives_acked += 1
                    if self.config.peak and not self.stopping:
                        self.send_keepalive(agent)
            elif agent.state == HANDSHAKE:
                self.handshake_done(agent, connection, now)
        elif agent.receiving is not None and isinstance(message, control.AgentEvent):
            agent.receiving[1].update(message.payload)
        elif isinstance(message, control.FileUpdate | control.FileClose):
            self.shared_file(agent, message, connection)
        elif isinstance(message, control.Request):
            self.answer(agent, message)
        elif isinstance(message, control.ForceReconnect):
            if agent.state in (HANDSHAKE, RUNNING):
                self.tally.forced_reconnects += 1
                self.drop_connection(agent)
                agent.state = WAITING
                self.wheel.schedule(agent, now)
        elif isinstance(message, control.ErrorReply):
            self.error("manager_error")  # e.g. a refused version: no ack follows, the handshake times out
        if agent.receiving is not None and isinstance(message, control.OtherControl | control.ErrorReply):
            agent.receiving = None  # agentd: any other control message closes the file unverified

    def shared_file(
        self, agent: SimAgent, message: control.FileUpdate | control.FileClose, connection: SimConnection
    ) -> None:
        """A push as agentd takes it, in memory: the md5 of the chunks, compared at the close; a match is
        the merged.mg the next keep-alive reports."""
        if isinstance(message, control.FileUpdate):
            agent.receiving = (message.md5, hashlib.md5(usedforsecurity=False))
            return
        receiving, agent.receiving = agent.receiving, None
        if receiving is None:
            return
        if receiving[1].hexdigest() != receiving[0]:
            self.tally.shared_failed += 1
            return
        self.tally.shared_received += 1
        agent.merged_sum = receiving[0]
        agent.keepalive = keepalive_payload(
            agent.index, agent.key.name, connection.local_ip(), agent.merged_sum
        )
        if agent.keepalive_frame is not None:
            agent.keepalive_frame = agent.codec.seal(agent.keepalive)

    def handshake_done(self, agent: SimAgent, connection: SimConnection, now: float) -> None:
        self.tally.startup_latency.record(now - agent.startup_at)
        add_count(self.tally.handshakes_by_server, self.server_names[agent.server])
        agent.state = RUNNING
        agent.failures = 0
        if not agent.acked_once:
            agent.acked_once = True
            self.tally.acked += 1
        agent.keepalive = keepalive_payload(
            agent.index, agent.key.name, connection.local_ip(), agent.merged_sum
        )
        # Over UDP the manager takes each counter once (anyone can send from the agent's address).
        if self.config.precompute and self.tcp:
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
            self.tally.requests_answered += 1

    def error(self, kind: str) -> None:
        self.tally.error(kind)

    # -- failure injection --------------------------------------------------------------------------------

    def inject_failures(self, now: float) -> None:
        for agent in self.agents:
            if agent.role == Role.GO_SILENT:
                self.tally.silent += 1
                self.wheel.cancel(agent)
                if agent.state == QUEUED:
                    agent.state = STOPPED
                    continue
                agent.state = SILENT
                agent.pending.clear()
                if agent.connection is not None:
                    agent.connection.pause()  # a connect in progress finishes and pauses too
            elif agent.role == Role.GO_SHUTDOWN:
                self.tally.shutdown += 1
                self.wheel.cancel(agent)
                if agent.state in (HANDSHAKE, RUNNING):
                    self.send(agent, control.SHUTDOWN)
                agent.state = STOPPED
                self.drop_connection(agent)

    def snapshot(self, now: float, final: bool = False) -> Snapshot:
        return self.tally.snapshot(self.agents, self.t0, now, final)
