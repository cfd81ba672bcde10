"""`WdbServer`: the query socket `queue/db/wdb` as a manager service: one task per client, one request at a
time, handlers from `commands/`; reads on a small pool, ad-hoc `sql` on a thread of its own.

The danger: whoever can open the socket controls the length header and the pacing. A header of zero or above
OS_MAXSTR closes the connection at once; a stalled frame, or an answer not taken, after FRAME_TIMEOUT; an idle
one after IDLE_TIMEOUT; nothing a client sends runs on the loop. Clients that hold every one of the
MAX_CLIENTS slots cannot lock the local tools out: a newcomer closes the client that has waited on its peer
the longest, and is turned away only while every slot is being answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentpulse.ratelimit import RateLimitedLog
from agentpulse.shared.control import SharedControl
from agentpulse.store.backend import StoreError
from agentpulse.store.facade import Store
from agentpulse.wdb.commands import agents, groups, maintenance, remoted, sql, status, sync
from agentpulse.wdb.commands.context import Command, Context, KeysReload
from agentpulse.wdb.protocol import OS_MAXSTR, Reply, WdbError, answer_body, near, split_request, unix_address
from agentpulse.wire.frames import LENGTH_SIZE, decode_length, encode_frame

log = logging.getLogger(__name__)

FRAME_TIMEOUT = 5.0  # a started frame must be complete within this; an answer must be taken within it
# The defaults of <database><wdb_idle_timeout> and <wdb_max_clients> (config.DatabaseConfig says the same).
IDLE_TIMEOUT = 5.0  # a connection with no request for this long is closed
MAX_CLIENTS = 64
READ_WORKERS = 2
SOCKET_MODE = 0o660

# `global <command> [argument]`
GLOBAL_COMMANDS: dict[str, Command] = {
    **agents.COMMANDS,
    **status.COMMANDS,
    **groups.COMMANDS,
    **sync.COMMANDS,
    **maintenance.COMMANDS,
    **sql.COMMANDS,
}
# The other actors: `<actor> <rest>`
ACTORS: dict[str, Callable[[Context, str], Awaitable[Reply]]] = {
    "agent": maintenance.agent,
    "remoted": remoted.remoted,
}


@dataclass(slots=True)
class _Slot:
    """One client holding a slot; `waiting_since` (monotonic) is None while its request is being answered."""

    task: asyncio.Task[Any]
    writer: asyncio.StreamWriter
    waiting_since: float | None
    evicted: bool = False


class WdbServer:
    """`queue/db/wdb`, as a manager service: started after the store opened, stopped before it closes."""

    def __init__(
        self,
        store: Store,
        path: Path,
        *,
        allow_sql: str = "no",
        send_to_agents: Callable[[list[int], bytes], int] | None = None,
        reload_keys: KeysReload | None = None,
        shared: SharedControl | None = None,
        max_clients: int = MAX_CLIENTS,
        frame_timeout: float = FRAME_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        sql_time_limit: float = sql.SQL_TIME_LIMIT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.path = path
        self.max_clients = max_clients
        self.frame_timeout = frame_timeout
        self.idle_timeout = idle_timeout
        self.context = Context(
            store,
            allow_sql=allow_sql,
            sql_time_limit=sql_time_limit,
            send_to_agents=send_to_agents,
            clock=clock,
            reload_keys=reload_keys,
            shared=shared,
        )
        self.warn = RateLimitedLog(log)
        self.stats = {"requests": 0, "errors": 0, "refused_clients": 0, "evicted_clients": 0, "closed": 0}
        self._server: asyncio.AbstractServer | None = None
        self._clients: dict[asyncio.Task[Any], _Slot] = {}  # the clients holding a slot
        self._tasks: set[asyncio.Task[Any]] = set()  # every client task, evicted ones until they end

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.context.readers = ThreadPoolExecutor(READ_WORKERS, thread_name_prefix="wdb-read")
        self.context.sql_thread = ThreadPoolExecutor(1, thread_name_prefix="wdb-sql")
        await asyncio.to_thread(self._remove_stale)
        with unix_address(self.path) as address:
            self._server = await asyncio.start_unix_server(self._client, path=address)
        await asyncio.to_thread(self.path.chmod, SOCKET_MODE)
        log.info("Query socket listening on %s", self.path)

    def _remove_stale(self) -> None:
        # The home lock guarantees no other manager: a socket file left here is from a dead one.
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), self.frame_timeout)
            self._server = None
        for pool in (self.context.readers, self.context.sql_thread):
            if pool is not None:
                await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)
        self.context.readers = self.context.sql_thread = None
        await asyncio.to_thread(self._remove_stale)

    # -- connections -----------------------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._clients) >= self.max_clients and not self._make_room():
            self.stats["refused_clients"] += 1
            self.warn.warning(
                "clients", "Query socket: all %d clients are being answered, one refused", len(self._clients)
            )
            writer.close()
            return
        slot = self._clients[task] = _Slot(task, writer, time.monotonic())
        self._tasks.add(task)
        try:
            while True:
                slot.waiting_since = time.monotonic()
                body = await self._read_frame(reader)
                if body is None or slot.evicted:
                    return
                slot.waiting_since = None
                text, terminal = split_request(body)
                self.stats["requests"] += 1
                answer = await self.dispatch(text)
                if answer.startswith("err"):
                    self.stats["errors"] += 1
                slot.waiting_since = time.monotonic()  # the answer waits on the peer to take it
                writer.write(encode_frame(answer_body(answer, terminal)))
                await asyncio.wait_for(writer.drain(), self.frame_timeout)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            self.stats["closed"] += 1
        except asyncio.CancelledError:
            # stop(): end quietly. A cancelled connection task makes asyncio's own stream callback
            # (Python 3.11) log a spurious error, so the cancellation ends here.
            pass
        finally:
            if self._clients.get(task) is slot:
                del self._clients[task]
            self._tasks.discard(task)
            writer.close()

    def _make_room(self) -> bool:
        """Every slot is taken: close the client that has waited on its peer the longest (idle between
        requests, stalled in a frame, or not taking its answer). False when every client is being answered."""
        waiting = [slot for slot in self._clients.values() if slot.waiting_since is not None]
        if not waiting:
            return False
        victim = min(waiting, key=lambda slot: slot.waiting_since or 0.0)
        idle = time.monotonic() - (victim.waiting_since or 0.0)
        del self._clients[victim.task]
        victim.evicted = True
        # Closing the transport ends a read even if the cancellation races a frame that just arrived.
        victim.writer.close()
        victim.task.cancel()
        self.stats["evicted_clients"] += 1
        self.warn.warning(
            "evicted",
            "Query socket: all %d slots taken; the client waiting for %.1f s was closed to make room",
            self.max_clients,
            idle,
        )
        return True

    async def _read_frame(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            first = await asyncio.wait_for(reader.readexactly(1), self.idle_timeout)
        except asyncio.IncompleteReadError:
            return None  # closed between requests: the normal end
        except TimeoutError:
            return None
        try:
            rest = await asyncio.wait_for(reader.readexactly(LENGTH_SIZE - 1), self.frame_timeout)
            length = decode_length(first + rest)
            if length == 0 or length > OS_MAXSTR:
                self.warn.warning(
                    "length", "Query socket: message of %d bytes refused, connection closed", length
                )
                return None
            return await asyncio.wait_for(reader.readexactly(length), self.frame_timeout)
        except (TimeoutError, asyncio.IncompleteReadError):
            self.warn.warning("truncated", "Query socket: incomplete message, connection closed")
            return None

    # -- dispatch --------------------------------------------------------------------------------------

    async def dispatch(self, text: str) -> Reply:
        """One request, one answer (without the `\\n` rule, applied by the caller)."""
        try:
            return await self._dispatch(text.lstrip(" \n"))
        except WdbError as error:
            return f"err {error}"
        except (StoreError, sqlite3.Error, OSError, RuntimeError) as error:
            log.warning("Query socket: %r failed: %s", near(text), error)
            return f"err Cannot execute Global database query; {error}"
        except Exception:
            # A bug must cost one answer, not the connection or the server.
            log.exception("Query socket: %r failed", near(text))
            return "err Internal error"

    async def _dispatch(self, text: str) -> Reply:
        actor, sep, rest = text.partition(" ")
        if not sep:
            return f"err Invalid DB query syntax, near '{near(text)}'"
        if actor == "global":
            command, sep, argument = rest.partition(" ")
            entry = GLOBAL_COMMANDS.get(command)
            if entry is None or (entry.needs_argument and not sep):
                return f"err Invalid DB query syntax, near '{near(command)}'"
            return await entry.handler(self.context, argument)
        handler = ACTORS.get(actor)
        if handler is None:
            return f"err Invalid DB query actor: '{near(actor)}'"
        return await handler(self.context, rest)
