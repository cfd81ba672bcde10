"""`EventsService`: the manager service that connects to NATS and wires the publishers to the store's hooks.

It starts after the store opens and before the manager resets live agents, so the code-5 resets get their
events too; it stops after remoted and the store's final flush. The danger is a NATS that cannot be used:
`EventsService.start` says when that is a log line and a retry, and when it stops the manager's start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import ssl
import time
from collections.abc import Awaitable, Callable
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from nats.aio.client import Client as NATS
from nats.errors import AuthorizationError, StaleConnectionError
from nats.errors import Error as NatsError

from agentpulse.config import NatsConfig
from agentpulse.events import payloads
from agentpulse.events.config import ConfigPublisher
from agentpulse.events.embedded import EmbeddedNats, EmbeddedNatsError
from agentpulse.events.keepalives import KeepalivePublisher
from agentpulse.events.publisher import NatsLink, OutboxPublisher, OutboxReader
from agentpulse.events.streamwatch import StreamWatch
from agentpulse.records import TransitionRow
from agentpulse.status import ConnectionStatus
from agentpulse.store.subscriber import Subscriber

if TYPE_CHECKING:
    from agentpulse.paths import Home
    from agentpulse.store.facade import Store

log = logging.getLogger(__name__)

RECONNECT_TIME_WAIT = 2  # seconds (nats-py wants an int)
CONNECT_TIMEOUT = 5  # one attempt at one server
PROBE_TIMEOUT = 20.0  # the whole first connect when NATS is required
PING_INTERVAL = 20  # a silent dead server is noticed within ~PING_INTERVAL * MAX_OUTSTANDING_PINGS
MAX_OUTSTANDING_PINGS = 3
REMINDER_INTERVAL = 300.0  # while NATS stays unavailable, one reminder line every five minutes
FINAL_DRAIN_TIMEOUT = 3.0
CLOSE_TIMEOUT = 5.0
TASKS_TIMEOUT = 5.0  # for the publishers' tasks to end once cancelled and told to stop
CLIENT_NAME = "agentpulse"


class NatsUnavailable(ConnectionError):
    """NATS is required (`start_without_nats` no) and cannot be used: the manager does not start."""


def redact(url: str) -> str:
    """A server URL without user:password@, for logs."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def tls_context(config: NatsConfig) -> ssl.SSLContext | None:
    """The client TLS context from `<tls_ca>`, `<tls_cert>`, `<tls_key>` (reads files: call off the loop)."""
    if not (config.tls_ca or config.tls_cert):
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=config.tls_ca)
    if config.tls_cert and config.tls_key:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    return context


def connect_options(config: NatsConfig) -> dict[str, Any]:
    """nats-py connect() options from `<nats>`: credentials and TLS (reads files: call off the loop)."""
    options: dict[str, Any] = {"name": CLIENT_NAME, "connect_timeout": CONNECT_TIMEOUT}
    if config.user is not None:
        options["user"] = config.user
        options["password"] = config.password
    if config.token is not None:
        options["token"] = config.token
    if config.creds_file is not None:
        if find_spec("nkeys") is None:
            raise NatsUnavailable(
                "<nats><creds_file> needs the nkeys package (pip install 'nats-py[nkeys]'), which is not installed"
            )
        if not Path(config.creds_file).is_file():
            raise NatsUnavailable(f"<nats><creds_file> {config.creds_file} is not a readable file")
        options["user_credentials"] = config.creds_file
    try:
        context = tls_context(config)
    except (OSError, ssl.SSLError) as error:
        raise NatsUnavailable(f"<nats> TLS files cannot be loaded: {error}") from None
    if context is not None:
        options["tls"] = context
    return options


def describe(error: BaseException) -> str:
    """A connect error as an operator reads it."""
    text = str(error).strip() or type(error).__name__
    if isinstance(error, AuthorizationError) or "authorization violation" in text.lower():
        return "the server refused the credentials (Authorization Violation)"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, TimeoutError):
        return "no answer (timeout)"
    return text


class EventsService:
    def __init__(
        self, config: NatsConfig, store: Store, home: Home, key_name: Callable[[int], str | None]
    ) -> None:
        self.config = config
        self.store = store
        self.home = home
        self.key_name = key_name  # client.keys, by agent id
        self.origin = payloads.Origin(self.store.node_name, self.store.manager_host)
        self.embedded: EmbeddedNats | None = None
        self.servers: list[str] = list(self.config.urls)
        self.nc = NATS()
        self.link = NatsLink(self.nc)
        self.reader = OutboxReader(store.reader(keep_open=True))
        self.outbox = OutboxPublisher(
            self.link,
            self.store,
            self.reader,
            prefix=self.config.subject_prefix,
            stream=self.config.stream,
            kv_bucket=self.config.kv_bucket,
            replicas=self.config.replicas,
        )
        # Made here, not at start: whoever observes it (metrics) can do so from the first event.
        self.keepalives: KeepalivePublisher | None = None
        if self.config.keepalive_events:
            self.keepalives = KeepalivePublisher(
                self.link,
                prefix=self.config.subject_prefix,
                origin=self.origin,
                run=int(time.time() * 1000),
                name_of=self.name_of,
                status_of=self.status_of,
            )
        self.configs: ConfigPublisher | None = None
        # The streams we write, read back for their replicas' health: status events, the KV bucket's
        # stream, and agent events (published by the remoted processes, read back here).
        events_stream = [config.agent_events.stream] if config.agent_events.enabled else []
        self.streams = StreamWatch(
            self.link,
            [config.stream, f"KV_{config.kv_bucket}", *events_stream],
            state_path=home.nats_streams_state,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._last_error: str | None = None
        self._disconnected_at: float | None = None
        self._closing = False
        self._recent_error: str | None = None
        self._unavailable_since: float | None = None
        self._reminded_at = 0.0
        self._connect_started = False
        self._subscriber: Subscriber | None = None

    # -- names and statuses for the payloads (loop side, cheap) ------------------------------------------

    def name_of(self, agent_id: int) -> str | None:
        name = self.key_name(agent_id)
        return name if name is not None else self.store.name_of(agent_id)

    def status_of(self, agent_id: int) -> ConnectionStatus:
        view = self.store.agents.get(agent_id)
        return view.status if view is not None else ConnectionStatus.NEVER_CONNECTED

    def encode(self, row: TransitionRow) -> tuple[str, str, bytes]:
        return payloads.outbox_row(self.config.subject_prefix, row, self.name_of(row.agent_id), self.origin)

    # -- start and stop --------------------------------------------------------------------------------

    async def start(self) -> None:
        """After the store opens, before the manager resets live agents.

        Start the embedded server when `<nats>` names no URL; install the outbox encoder so that every
        transition from here on, the code-5 resets included, gets its event in the same transaction; then
        connect. With `<start_without_nats>yes</...>` (the default) a failed first connect is one clear log
        line and a background retry: the manager serves agents and status events wait in the outbox. With
        `no`, wrong credentials or an unreachable server stop the start with `NatsUnavailable` (an OSError,
        so `agentpulse start` prints it and exits 1). TLS or creds files that cannot be used stop the start
        either way: retrying cannot fix them.
        """
        try:
            await self._start()
        except BaseException:
            await self._shutdown(drain=False)
            raise

    async def _start(self) -> None:
        options = await asyncio.to_thread(connect_options, self.config)
        if not self.servers:
            self.embedded = EmbeddedNats(self.home)
            try:
                self.servers = [await self.embedded.start()]
            except EmbeddedNatsError as error:
                if not self.config.start_without_nats:
                    raise
                log.error(
                    "%s; the manager keeps serving agents, status events wait in the outbox until a start with "
                    "a working NATS (or set <nats><url>)",
                    error,
                )
        where = ", ".join(redact(url) for url in self.servers)
        if not self.config.start_without_nats:
            await self._probe(options, where)
        loop = asyncio.get_running_loop()
        self.outbox.bind(loop)
        try:  # before the subscription below: from then on commits are counted (the outbox depth)
            self.outbox.backlog_at_start = await self.reader.count(0)
        except sqlite3.Error as error:
            log.warning("cannot count the outbox left by the last run: %s", error)
        self.configs = ConfigPublisher(
            self.link, prefix=self.config.subject_prefix, origin=self.origin, name_of=self.name_of
        )
        self._subscriber = Subscriber(
            on_config_status=self.configs.on_config_status,
            on_keepalive=self.keepalives.on_keepalive if self.keepalives is not None else None,
            on_outbox_committed=self.outbox.on_commit,
            outbox_encoder=self.encode,
        )
        self.store.subscribe(self._subscriber)
        connected = asyncio.Event()
        if self.servers:
            self._tasks.append(
                asyncio.create_task(self._connect(options, where, connected), name="nats-connect")
            )
        self._tasks.append(asyncio.create_task(self.outbox.run(), name="events-outbox"))
        if self.keepalives is not None:
            self._tasks.append(asyncio.create_task(self.keepalives.run(), name="events-keepalive"))
        self._tasks.append(asyncio.create_task(self.configs.run(), name="events-config"))
        self._tasks.append(asyncio.create_task(self.streams.run(), name="events-streams"))
        if not self.config.start_without_nats:
            try:
                await asyncio.wait_for(connected.wait(), PROBE_TIMEOUT)
            except TimeoutError:
                raise NatsUnavailable(
                    f"NATS at {where} accepted a test connection but not the next one within "
                    f"{PROBE_TIMEOUT:.0f} s: {self._last_error or 'no error reported'}"
                ) from None

    async def _probe(self, options: dict[str, Any], where: str) -> None:
        """NATS is required: try every server once; fail the start with the reason if none will do."""
        errors: list[str] = []

        async def collect(error: Exception) -> None:
            errors.append(describe(error))

        probe = NATS()
        try:
            await asyncio.wait_for(
                probe.connect(
                    self.servers,
                    **options,
                    error_cb=collect,
                    allow_reconnect=False,  # an authorization error ends the attempt
                    max_reconnect_attempts=1,  # an unreachable server is tried twice, then dropped
                    reconnect_time_wait=0,
                ),
                PROBE_TIMEOUT,
            )
        except (NatsError, OSError, TimeoutError) as error:
            reason = errors[-1] if errors else describe(error)
            raise NatsUnavailable(
                f"NATS at {where} is unavailable: {reason}; <nats><start_without_nats> is no, so the manager "
                "does not start without it"
            ) from None
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(probe.close(), CLOSE_TIMEOUT)

    async def _connect(self, options: dict[str, Any], where: str, connected: asyncio.Event) -> None:
        """The long-lived connection: retries for ever, first connect included."""
        self._connect_started = True
        try:
            await self.nc.connect(
                self.servers,
                **options,
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                max_reconnect_attempts=-1,
                reconnect_time_wait=RECONNECT_TIME_WAIT,
                ping_interval=PING_INTERVAL,
                max_outstanding_pings=MAX_OUTSTANDING_PINGS,
            )
        except (NatsError, OSError, TimeoutError) as error:
            log.error(
                "NATS connection to %s failed for good: %s; events stay in the outbox", where, describe(error)
            )
            return
        self.link.js = self.nc.jetstream()
        self.link.epoch += 1
        if self._unavailable_since is not None:
            log.info(
                "Connected to NATS at %s after %.1f s",
                redact(self._current_url(where)),
                time.monotonic() - self._unavailable_since,
            )
        else:
            log.info("Connected to NATS at %s", redact(self._current_url(where)))
        self._back()
        connected.set()
        self.outbox.kick()

    def _back(self) -> None:
        self._recent_error = None
        self._unavailable_since = None
        self._disconnected_at = None
        self._last_error = None

    def _current_url(self, fallback: str) -> str:
        url = self.nc.connected_url
        return url.geturl() if url is not None else fallback

    async def _on_error(self, error: Exception) -> None:
        """One warning when NATS becomes unavailable, a reminder every REMINDER_INTERVAL, never one per retry."""
        reason = describe(error)
        self._recent_error = reason
        if self._closing:
            log.debug("NATS: %s", reason)
            return
        now = time.monotonic()
        where = ", ".join(redact(url) for url in self.servers)
        if self.link.epoch == 0 or self._disconnected_at is not None:
            if self._unavailable_since is None:
                self._unavailable_since = self._reminded_at = now
                log.warning(
                    "NATS at %s is unavailable: %s; the manager keeps serving agents, status events wait in "
                    "the outbox; retrying every %d s",
                    where,
                    reason,
                    RECONNECT_TIME_WAIT,
                )
            elif now - self._reminded_at >= REMINDER_INTERVAL:
                self._reminded_at = now
                log.warning(
                    "NATS at %s still unavailable after %.0f s: %s",
                    where,
                    now - self._unavailable_since,
                    reason,
                )
            else:
                log.debug("NATS: %s", reason)
            return
        if isinstance(error, StaleConnectionError | OSError):
            log.debug("NATS: %s", reason)  # the connection is lost: the disconnect line says so
        elif reason != self._last_error:
            self._last_error = reason
            log.warning("NATS: %s", reason)

    async def _on_disconnected(self) -> None:
        if self._disconnected_at is None and self.link.epoch > 0 and not self._closing:
            self._disconnected_at = self._unavailable_since = self._reminded_at = time.monotonic()
            log.warning(
                "NATS connection lost (%s); reconnecting every %d s, status events wait in the outbox",
                self._recent_error or "closed by the server",
                RECONNECT_TIME_WAIT,
            )

    async def _on_reconnected(self) -> None:
        since = self._unavailable_since
        self._back()
        self.link.epoch += 1
        log.info(
            "NATS reconnected to %s after %.1f s",
            redact(self._current_url("?")),
            time.monotonic() - since if since is not None else 0.0,
        )
        self.outbox.kick()

    async def stop(self) -> None:
        """After remoted stopped and the store's final flush: one last bounded drain of the outbox, then close."""
        await self._shutdown(drain=True)

    async def _shutdown(self, *, drain: bool) -> None:
        if self._subscriber is not None:
            self.store.unsubscribe(self._subscriber)
            self._subscriber = None
        tasks, self._tasks = self._tasks, []
        self.outbox.stopped = True
        self.streams.stopped = True
        if self.keepalives is not None:
            self.keepalives.stopped = True
        for task in tasks:
            task.cancel()
        # Not gather(): nats-py's publish swallows a cancellation, and a task caught in it goes on until
        # it sees `stopped`; a stop must not wait for ever on that.
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=TASKS_TIMEOUT)
            if late:
                log.warning(
                    "events: %s did not end within %.0f s of the stop; going on without them",
                    ", ".join(task.get_name() for task in late),
                    TASKS_TIMEOUT,
                )
        if drain and self.link.up:
            await self._bounded("final outbox drain", self.outbox.drain(), FINAL_DRAIN_TIMEOUT)
            if self.keepalives is not None:
                await self._bounded("last keep-alive events", self.keepalives.flush(), FINAL_DRAIN_TIMEOUT)
            if self.configs is not None:
                await self._bounded("last config events", self.configs.flush(), FINAL_DRAIN_TIMEOUT)
        self._closing = True
        if self._connect_started and not self.nc.is_closed:
            await self._bounded("NATS close", self.nc.close(), CLOSE_TIMEOUT)
        if self.keepalives is not None:
            self.keepalives.close()
        await self.reader.close()
        if self.embedded is not None:
            await self.embedded.stop()
        if drain:
            log.info(
                "Events stopped: %d status events and %d keep-alive events published, %d keep-alive events "
                "dropped, %d coalesced while NATS lagged",
                self.outbox.published,
                self.keepalives.published if self.keepalives else 0,
                self.keepalives.dropped if self.keepalives else 0,
                self.keepalives.coalesced if self.keepalives else 0,
            )

    @staticmethod
    async def _bounded(what: str, work: Awaitable[Any], timeout: float) -> None:
        """Wait for `work` at most `timeout`, then go on without it. Not `wait_for`: that waits for the
        cancelled work to end, and nats-py's close swallows a cancellation while it waits for the socket to
        drain (a stuck server: for ever). The work left behind ends when the connection does."""
        task = asyncio.ensure_future(work)
        done, _ = await asyncio.wait((task,), timeout=timeout)
        if not done:
            task.cancel()
            # The work may still end with an error (nats-py turns the cancellation into a closed
            # connection): retrieved here, or asyncio.run's shutdown prints it as unhandled.
            task.add_done_callback(_left_behind(what))
            log.warning("%s did not finish within %.0f s", what, timeout)
            return
        error = None if task.cancelled() else task.exception()
        if isinstance(error, Exception):  # stopping: report and go on
            log.warning("%s failed: %s", what, describe(error))
        elif error is not None:
            raise error


def _left_behind(what: str) -> Callable[[asyncio.Future[Any]], None]:
    def retrieved(task: asyncio.Future[Any]) -> None:
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log.debug("%s, left behind at the stop, ended with: %s", what, describe(error))

    return retrieved
