"""Enrolment on port 1515 (reference section 14): the listener, one protocol object per connection
(`connection.py`), and the writer that turns accepted requests into client.keys lines, keys remoted knows,
and rows in global.db.

The plan. Connections are accepted by hand so the limits (`limits.py`) are checked before any TLS work;
then the handshake (TLS 1.2+, `tls.py`), one request line (at most `MAX_REQUEST` bytes, within
`REQUEST_TIMEOUT`), parsed at once (`wire.enrolment`): a bad one is answered and closed there. Good ones
queue for the writer, which takes them in batches: under the keys lock (shared with manage_agents) it
re-reads client.keys if someone else changed it, applies Wazuh's rules (`registry.py`) to each request in
order, writes the file once (temporary file, fsync, rename), hands the new lines to remoted (`KeysTarget`:
the manager's key store, and every worker process, which answer), records the agents in the store, and
only then answers each agent with its key. So an agent that has its key is known to remoted and to
global.db, and a thousand agents enrolling at once cost a few file writes, not a thousand.

The danger is that everything before the password check comes from anyone: every limit here is per
connection or per source, and every log line about a refusal is rate-limited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from agentpulse.authd import tls
from agentpulse.authd.connection import EnrolConnection
from agentpulse.authd.limits import SourceLimits
from agentpulse.authd.registry import AgentFacts, Enrolled, Policy, Registry, source_address
from agentpulse.config import AuthConfig
from agentpulse.keysfile import KeysLock, KeysRead, read_keys_file, write_keys_lines
from agentpulse.paths import Home
from agentpulse.ratelimit import RateLimitedLog
from agentpulse.remoted.keywatch import Signature, signature
from agentpulse.status import RowReason
from agentpulse.store.batch import InsertedAgent
from agentpulse.store.facade import Store
from agentpulse.store.groups import DEFAULT_GROUP
from agentpulse.wire import enrolment
from agentpulse.wire.enrolment import EnrolmentError, EnrolRequest

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT: Final = 10.0
ACCEPTS_PER_WAKEUP: Final = 128
BATCH_MAX: Final = 1000
LISTEN_BACKLOG: Final = 1024
STOP_TIMEOUT: Final = 10.0


class KeysTarget(Protocol):
    """Where new keys go before their agents hear them: remoted's key stores (the manager's and its
    workers'). `hold()` comes before client.keys is written, then `take()` (or `release()` if it was not):
    in between, the key reload leaves the file to its writer."""

    def hold(self) -> None: ...

    async def take(self, lines: list[str], before: Signature, after: Signature) -> None: ...

    def release(self) -> None: ...


def _shown(text: str) -> str:
    """Text from a peer, safe for one log line."""
    return repr(text[:128])


@dataclass(frozen=True, slots=True)
class _Pending:
    connection: EnrolConnection
    request: EnrolRequest


class EnrolmentService:
    """A front service of the manager (`start()`/`stop()`), given the store and where new keys go."""

    def __init__(
        self,
        config: AuthConfig,
        home: Home,
        store: Store,
        keys: KeysTarget,
        *,
        manager_version: str,
        hostname: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.home = home
        self.store = store
        self.keys = keys
        self.manager_version = None if config.allow_higher_versions else manager_version
        self.clock = clock
        self.keys_path = home.client_keys
        self.lock = KeysLock(self.keys_path)
        self.registry = Registry(Policy(config.force, config.use_source_ip, config.purge, hostname))
        self.limits = SourceLimits(config.source_rate, config.max_connections)
        self.warn = RateLimitedLog(log)
        self.password: str | None = None
        self.context: ssl.SSLContext | None = None
        self.port = 0
        self.enrolled = 0
        self.refusals: Counter[str] = Counter()  # by kind (the words of Wazuh's error before its colon)
        self._listener: socket.socket | None = None
        self._connections: set[EnrolConnection] = set()
        self._handshakes: set[asyncio.Task[None]] = set()
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._read_signature: Signature | object = _UNREAD  # the file as the registry last saw it
        self._password_path = home.etc / "authd.pass"
        self._password_generated = False
        self._busy = False  # a batch is being written

    # -- start and stop -----------------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self._prepare)
            self._listener = self._listen()
        except tls.AuthdSetupError as error:  # remoted serves on: as when wazuh-authd alone stops
            log.error("Enrolment is off: %s", error)
            return
        except OSError as error:
            log.error(
                "Enrolment is off: cannot listen on port %d: %s", self.config.port, error.strerror or error
            )
            return
        self.port = self._listener.getsockname()[1]
        asyncio.get_running_loop().add_reader(self._listener.fileno(), self._accept)
        self._writer = asyncio.create_task(self._write_loop(), name="authd-writer")
        if self.password is None:
            how = "No password required."
        elif self._password_generated:
            how = f"Random password chosen for agent authentication: {self.password}"
        else:
            how = f"Using password specified on file: {self._password_path}"
        log.info("Accepting connections on port %d. %s", self.port, how)

    def _prepare(self) -> None:
        """Blocking: the certificate (made if missing), the password, the TLS context, client.keys."""
        root = self.home.root
        cert = tls.resolve(root, self.config.ssl_manager_cert)
        key = tls.resolve(root, self.config.ssl_manager_key)
        names = (self.config.local_ip,) if self.config.local_ip else ()
        made = tls.ensure_certificate(cert, key, names=names)
        if made is not None:
            log.info("Created the enrolment certificate %s and key %s (SHA-256 %s)", cert, key, made)
        ca = tls.resolve(root, self.config.ssl_agent_ca) if self.config.ssl_agent_ca else None
        self.context = tls.server_context(self.config, cert, key, ca)
        if self.config.use_password:
            password = tls.load_password(self._password_path)
            self.password, self._password_generated = password.text, password.generated
        with self.lock:
            self._sync()

    def _listen(self) -> socket.socket:
        family = socket.AF_INET6 if self.config.ipv6 else socket.AF_INET
        host = self.config.local_ip or ("::" if self.config.ipv6 else "0.0.0.0")
        if self.config.local_ip and ":" in self.config.local_ip:
            family = socket.AF_INET6
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            listener.bind((host, self.config.port))
            listener.listen(LISTEN_BACKLOG)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        return listener

    async def stop(self) -> None:
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._listener.close()
            self._listener = None
        for task in list(self._handshakes):
            task.cancel()
        await asyncio.gather(*self._handshakes, return_exceptions=True)
        if self._writer is not None:
            # what is queued is answered (the file is written first); no new request comes
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained(), STOP_TIMEOUT)
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        for connection in list(self._connections):
            connection.close()
        if self.lock.held:
            self.lock.release()

    async def _drained(self) -> None:
        while self._pending or self._busy:
            await asyncio.sleep(0.01)

    # -- connections --------------------------------------------------------------------------------------

    def _accept(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        for _ in range(ACCEPTS_PER_WAKEUP):
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:  # out of files, for one: the listener stays
                self.warn.warning("accept", "Enrolment: cannot accept a connection: %s", error)
                return
            source = source_address(str(address[0]))
            refusal = self.limits.admit(source)
            if refusal is not None:
                self.warn.warning(
                    f"limit:{refusal}", "%s. Rejecting the enrolment connection from %s.", refusal, source
                )
                sock.close()
                continue
            sock.setblocking(False)
            task = loop.create_task(self._handshake(sock, source))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, sock: socket.socket, source: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                lambda: EnrolConnection(self, source),
                sock,
                ssl=self.context,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            )
        except (OSError, ssl.SSLError, TimeoutError) as error:  # ConnectionError is an OSError
            self.limits.release(source)
            reason = getattr(error, "reason", None) or str(error) or type(error).__name__
            self.warn.warning("tls", "Enrolment: TLS handshake with %s failed: %s", source, reason)
            sock.close()  # already detached when the loop took it
        except asyncio.CancelledError:
            self.limits.release(source)
            sock.close()
            raise

    def peer_allowed(self, connection: EnrolConnection) -> bool:
        """Right after the handshake: the connection counts, and `<ssl_verify_host>` is checked."""
        self._connections.add(connection)
        if self.config.ssl_agent_ca is None or not self.config.ssl_verify_host:
            return True
        transport = connection.transport
        peercert = transport.get_extra_info("peercert") if transport is not None else None
        if isinstance(peercert, dict) and tls.names_address(peercert, connection.source):
            return True
        self.warn.warning("verify", "Unable to verify client certificate (from %s).", connection.source)
        return False

    def connection_closed(self, connection: EnrolConnection) -> None:
        if connection in self._connections:
            self._connections.discard(connection)
            self.limits.release(connection.source)

    def refuse_quietly(self, connection: EnrolConnection, why: str) -> None:
        """Close without a reply (what is not a request gets none), with a rate-limited log line."""
        self.warn.warning(f"quiet:{why}", "Enrolment connection from %s closed: %s", connection.source, why)
        connection.close()

    def received(self, connection: EnrolConnection, line: bytes) -> None:
        try:
            request = enrolment.parse_request(
                line, password=self.password, manager_version=self.manager_version
            )
        except EnrolmentError as error:
            self._refused(connection, error, None)
            return
        self._pending.append(_Pending(connection, request))
        self._wake.set()

    def _refused(self, connection: EnrolConnection, error: EnrolmentError, name: str | None) -> None:
        who = f"'{name}' " if name is not None else ""
        detail = f" ({error.detail})" if error.detail else ""
        kind = error.response.split(":", 2)[1] if ":" in error.response else error.response[:40]
        self.refusals[kind.strip()] += 1
        self.warn.warning(
            f"refused:{kind}",  # the kind of refusal, never the text an agent sent
            "Enrolment %sfrom %s refused: %s%s",
            who,
            connection.source,
            _shown(error.response),
            detail,
        )
        connection.reply(enrolment.build_error_reply(error.response))

    # -- the writer ---------------------------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:BATCH_MAX], self._pending[BATCH_MAX:]
                self._busy = True
                try:
                    await self._process(batch)
                except Exception:  # answer them, keep serving; the next batch re-reads the file
                    log.exception("Enrolment of %d agents failed", len(batch))
                    self._read_signature = _UNREAD
                    for pending in batch:
                        error = EnrolmentError(enrolment.ERR_INTERNAL.format(name=pending.request.name))
                        self._refused(pending.connection, error, pending.request.name)
                finally:
                    self._busy = False

    async def _process(self, batch: list[_Pending]) -> None:
        batch = [pending for pending in batch if pending.connection.open]  # the agent went away
        if not batch:
            return
        began = time.perf_counter()
        groups = {group for pending in batch for group in pending.request.groups}
        before, known = await asyncio.to_thread(self._open_batch, groups)  # the lock is ours from here
        locked = time.perf_counter()
        try:
            results = self._decide(batch, known)
            accepted = [enrolled for _, enrolled in results if isinstance(enrolled, Enrolled)]
            after = before
            if accepted:
                self.keys.hold()
                try:
                    after = await asyncio.to_thread(self._write)
                except OSError as error:
                    self.keys.release()
                    log.error("Cannot write %s: %s", self.keys_path, error)
                    self._read_signature = _UNREAD
                    internal = enrolment.ERR_INTERNAL
                    results = [(p, EnrolmentError(internal.format(name=p.request.name))) for p, _ in results]
                    accepted = []
        finally:
            self.lock.release()
        written = time.perf_counter()
        if accepted:
            await self._record(accepted, before, after)
        log.debug(
            "Enrolment batch of %d: %.1f ms to the lock, %.1f ms to the file, %.1f ms to remoted and the store",
            len(batch),
            (locked - began) * 1000,
            (written - locked) * 1000,
            (time.perf_counter() - written) * 1000,
        )
        for pending, outcome in results:
            self._answer(pending, outcome)

    def _answer(self, pending: _Pending, outcome: Enrolled | EnrolmentError) -> None:
        if isinstance(outcome, EnrolmentError):
            self._refused(pending.connection, outcome, pending.request.name)
            return
        key = outcome.key
        for old in outcome.replaced:
            log.info("%s. Removing old agent '%s' (id '%s').", old.why, old.key.name, old.key.id)
        log.info("Agent key generated for '%s' (requested by %s)", key.name, key.ip.text)
        pending.connection.reply(enrolment.build_key_reply(key.id, key.name, key.ip.text, key.key))

    def _decide(
        self, batch: list[_Pending], known: frozenset[str]
    ) -> list[tuple[_Pending, Enrolled | EnrolmentError]]:
        now = self.clock()
        results: list[tuple[_Pending, Enrolled | EnrolmentError]] = []
        for pending in batch:
            try:
                enrolled = self.registry.enrol(
                    pending.request,
                    pending.connection.source,
                    now,
                    facts=self._facts,
                    group_exists=known.__contains__,
                )
            except EnrolmentError as error:
                results.append((pending, error))
            else:
                results.append((pending, enrolled))
        return results

    async def _record(self, accepted: list[Enrolled], before: Signature, after: Signature) -> None:
        """remoted takes the keys, then the store the agents: before any agent hears its key."""
        lines = [line for enrolled in accepted for line in enrolled.lines()]
        try:
            await self.keys.take(lines, before, after)
        except BaseException:
            self.keys.release()
            raise
        now = self.clock()
        replaced = [old.key for enrolled in accepted for old in enrolled.replaced]
        if replaced:
            self.store.remove_agents(
                [key.number for key in replaced], now, purge_files=True, reason=RowReason.REPLACED
            )
            rids = [self.home.rids_file(key.id) for key in replaced]
            await asyncio.to_thread(_unlink_all, rids)
        self.store.register_agents(
            [
                InsertedAgent(
                    enrolled.key.number,
                    enrolled.key.name,
                    None,
                    enrolled.key.ip.text,
                    enrolled.key.key,
                    enrolled.groups or (DEFAULT_GROUP,),
                    int(now),
                )
                for enrolled in accepted
            ],
            now,
        )
        self.enrolled += len(accepted)

    def _facts(self, agent_id: int) -> AgentFacts | None:
        view = self.store.agents.get(agent_id)
        if view is None:
            return None
        return AgentFacts(view.status, view.disconnection_time, view.date_add)

    # -- blocking helpers (a thread, under the keys lock) ------------------------------------------------

    def _open_batch(self, groups: set[str]) -> tuple[Signature, frozenset[str]]:
        """Take the keys lock (the caller releases it), bring the registry up to date with the file, and
        read which of `groups` exist. One trip to a thread for all three."""
        self.lock.acquire()
        try:
            return self._sync(), self._known_groups(groups) if groups else frozenset()
        except BaseException:
            self.lock.release()
            raise

    def _sync(self) -> Signature:
        """Re-read client.keys if someone else wrote it since we last did; the signature it has now."""
        current = signature(self.keys_path)
        if current != self._read_signature:
            self.registry.load(read_keys_file(self.keys_path, mode=KeysRead.EDIT, missing_ok=True))
            self._read_signature = current
        return current

    def _write(self) -> Signature:
        write_keys_lines(self.keys_path, self.registry.lines())
        self._read_signature = current = signature(self.keys_path)
        return current

    def _known_groups(self, wanted: set[str]) -> frozenset[str]:
        """The groups of global.db (`agentpulse group create`) and of `etc/shared/<group>/` (Wazuh's)."""
        names = {name for name in self.store.reader().group_names() if name}
        shared = self.home.etc / "shared"
        names.update(group for group in wanted if _is_dir(shared / group))
        names.add(DEFAULT_GROUP)
        return frozenset(names & wanted)


_UNREAD = object()


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
