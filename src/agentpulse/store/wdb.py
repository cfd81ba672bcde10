"""The wazuh-db query socket, `queue/db/wdb` (reference section 7), served by the store.

Wire: 4-byte little-endian length, then the body, at most 65536 bytes, both ways. A request is read up to
its first NUL (the C client sends one at the end); if it then ends in `\\n`, the `\\n` is stripped and added
back to the answer. Requests
are `<actor> <command> [args]`; answers are `ok|due|err <payload>`, with Wazuh's error texts. Paged answers
(`due`: ask again from the last id) stop at WDB_MAX_RESPONSE_SIZE = 65536 - 512 bytes.

The plan: one task per client (this is not the agents' hot path: a few local tools and daemons), each
request answered before the next is read. Reads run on a small thread pool over read-only connections;
writes go through the Store like remoted's (status model, batch, history row, outbox row) and are answered
once committed, so a client reads back what it wrote. Ad-hoc `sql` gets a thread of its own and a time
limit. agentpulse adds the group commands the CLIs need (Wazuh's names: insert-agent-group, delete-group,
select-groups, find-group, get-group-agents, select-group-belong) and `remoted force-reconnect <group>`.

The danger: whoever can open the socket controls the length header and the pacing. A header above the
maximum or of zero closes that connection at once, a frame that stops arriving closes it after
FRAME_TIMEOUT, an idle one after IDLE_TIMEOUT, a reader too slow to take its answer after FRAME_TIMEOUT,
clients past MAX_CLIENTS are turned away, and nothing a client sends runs SQL on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import re
import socket
import sqlite3
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from agentpulse.ratelimit import RateLimitedLog
from agentpulse.records import StatusUpdate
from agentpulse.status import LIVE, ConnectionStatus, StatusCode, Trigger
from agentpulse.store.batch import ColumnUpdate, GroupChange, GroupChangeKind, GroupMode, InsertedAgent
from agentpulse.store.facade import Store
from agentpulse.store.groups import DEFAULT_GROUP, SYNC_STATUSES, group_hash
from agentpulse.store.sqlite import maintenance, schema
from agentpulse.wire.control import FORCE_RECONNECT

log = logging.getLogger(__name__)

OS_MAXSTR = 65536  # the largest body either way (OS_RecvSecureTCP / OS_SendSecureTCP)
WDB_MAX_RESPONSE_SIZE = OS_MAXSTR - 512
HEADER = struct.Struct("<I")
NEAR = 32  # "near '%.32s'"
FRAME_TIMEOUT = 5.0  # a started frame must be complete within this; an answer must be taken within it
IDLE_TIMEOUT = 600.0  # a connection with no request for this long is closed
MAX_CLIENTS = 64
READ_WORKERS = 2
SQL_TIME_LIMIT = 5.0  # seconds of SQLite work one `sql` request may take
SOCKET_MODE = 0o660
UNIX_PATH_MAX = 107  # sun_path holds 108 bytes with the NUL
GROUP_NAME = re.compile(r"^[\w.\-]{1,255}$")
RESERVED_GROUPS = (".", "..")
MODES = ("override", "append", "empty_only", "remove")
ALLOW_SQL_READ_ONLY = "read-only"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# update-connection-status: the (status, code) pairs the status model can produce, and the event for each.
STATUS_EVENTS: dict[tuple[str, int], Trigger] = {
    (ConnectionStatus.PENDING.value, StatusCode.NONE): Trigger.STARTUP,
    (ConnectionStatus.ACTIVE.value, StatusCode.NONE): Trigger.ALIVE,
    (ConnectionStatus.DISCONNECTED.value, StatusCode.SHUTDOWN_RECEIVED): Trigger.SHUTDOWN,
    (ConnectionStatus.DISCONNECTED.value, StatusCode.NO_KEEPALIVE): Trigger.TIMEOUT,
    (ConnectionStatus.DISCONNECTED.value, StatusCode.RESET_BY_MANAGER): Trigger.MANAGER_RESET,
    (ConnectionStatus.DISCONNECTED.value, StatusCode.CONNECTION_LOST): Trigger.CONNECTION_LOST,
}
KEEPALIVE_EVENTS = {
    ConnectionStatus.PENDING.value: Trigger.STARTUP,
    ConnectionStatus.ACTIVE.value: Trigger.ALIVE,
}
# sync-agent-info-set: what it may write directly; statuses go through the status model.
SYNC_COLUMNS = (
    "name",
    "ip",
    "os_name",
    "os_version",
    "os_major",
    "os_minor",
    "os_codename",
    "os_build",
    "os_platform",
    "os_uname",
    "os_arch",
    "version",
    "config_sum",
    "merged_sum",
    "manager_host",
    "node_name",
    "last_keepalive",
)
SYNCREQ_FIELDS = (*SYNC_COLUMNS, "id", "connection_status", "disconnection_time", "status_code")
T = TypeVar("T")
Reply = str


class WdbError(Exception):
    """An `err` answer; the message is the payload."""


class WdbUnavailable(OSError):
    """No manager answers on the socket."""


def dumps(value: object) -> str:
    """JSON the way cJSON_PrintUnformatted writes it: no spaces, UTF-8 as is."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def near(text: str) -> str:
    return text[:NEAR]


def atoi(text: str) -> int:
    """C's atoi(): leading blanks, an optional sign, digits; 0 when there are none. Clamped to 64 bits
    (strtol saturates too), so no number a client writes can overflow an SQLite binding."""
    match = re.match(r"\s*([+-]?\d{1,30})", text)
    return max(INT64_MIN, min(INT64_MAX, int(match.group(1)))) if match else 0


def row_object(row: sqlite3.Row) -> dict[str, Any]:
    """One row as wdb_exec_stmt() gives it: columns in SELECT order, NULL columns left out."""
    result: dict[str, Any] = {}
    for key, value in zip(row.keys(), tuple(row), strict=True):
        if value is None:
            continue
        result[key] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return result


def page(items: Iterable[Any], limit: int = WDB_MAX_RESPONSE_SIZE) -> tuple[str, str, list[Any]]:
    """As many items as fit in `limit` bytes of JSON array: ("ok" or "due", the array, the items)."""
    parts: list[str] = []
    taken: list[Any] = []
    size = 2
    for item in items:
        text = dumps(item)
        length = len(text.encode()) + (1 if parts else 0)
        if size + length > limit:
            return "due", "[" + ",".join(parts) + "]", taken
        parts.append(text)
        taken.append(item)
        size += length
    return "ok", "[" + ",".join(parts) + "]", taken


def split_request(body: bytes) -> tuple[str, bool]:
    """The query text, and whether the answer gets a trailing `\\n` (the request ended with one)."""
    body = body.split(b"\0", 1)[0]  # a C string ends at its first NUL, the terminator included
    terminal = body.endswith(b"\n")
    if terminal:
        body = body[:-1]
    return body.decode("utf-8", "replace"), terminal


def encode_frame(body: bytes) -> bytes:
    if len(body) > OS_MAXSTR:
        raise ValueError(f"a wazuh-db message holds at most {OS_MAXSTR} bytes, not {len(body)}")
    return HEADER.pack(len(body)) + body


def valid_group(name: str) -> bool:
    return bool(GROUP_NAME.match(name)) and name not in RESERVED_GROUPS


def _json_int(value: object) -> int | None:
    """A JSON number as cJSON's valueint would give it, or None; never outside 64 bits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and INT64_MIN <= value <= INT64_MAX:
        return value
    return None


def _storable(value: object) -> bool:
    """What a client may have written into a column: a string, a 64-bit integer, a number, or null."""
    if value is None or isinstance(value, str | float):
        return True
    return isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX


@contextlib.contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """An address for bind()/connect() even when the path is longer than sun_path allows (Linux: through
    the /proc/self/fd entry of the directory, held open meanwhile)."""
    text = str(path)
    if len(text.encode()) <= UNIX_PATH_MAX:
        yield text
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


# -- the client: CLIs and tests --------------------------------------------------------------------------


class WdbClient:
    """A blocking client, one request at a time, like Wazuh's framework `WazuhDBConnection`."""

    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            with unix_address(path) as address:
                self.sock.connect(address)
        except OSError as error:
            self.sock.close()
            if error.errno in (errno.ENOENT, errno.ECONNREFUSED):
                raise WdbUnavailable(error.errno, f"no manager answers on {path}") from None
            raise

    def __enter__(self) -> WdbClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> bytes:
        header = self._exactly(HEADER.size)
        (length,) = HEADER.unpack(header)
        return self._exactly(length)

    def _exactly(self, count: int) -> bytes:
        chunks = []
        while count:
            chunk = self.sock.recv(count)
            if not chunk:
                raise ConnectionError("the manager closed the query socket")
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)

    def query(self, text: str) -> str:
        self.sock.sendall(encode_frame(text.encode()))
        return self.receive().decode("utf-8", "replace")

    def query_json(self, text: str) -> Any:
        """The payload of an `ok` answer, decoded; WdbError for anything else."""
        status, _, payload = self.query(text).partition(" ")
        if status != "ok":
            raise WdbError(payload or status)
        return json.loads(payload) if payload else None

    def query_pages(self, template: str, start: int = 0, key: str = "id") -> list[Any]:
        """Every row of a paged command: `template` has a `{last}` for the last id seen."""
        rows: list[Any] = []
        last = start
        for _ in range(1_000_000):  # bounded: a page always advances `last`, or ends the loop
            status, _, payload = self.query(template.format(last=last)).partition(" ")
            if status not in ("ok", "due"):
                raise WdbError(payload or status)
            batch = json.loads(payload)
            rows.extend(batch)
            if status == "ok" or not batch:
                return rows
            tail = batch[-1]
            last = tail[key] if isinstance(tail, dict) else tail
        raise WdbError("too many pages")


# -- the server ------------------------------------------------------------------------------------------


class WdbServer:
    """`queue/db/wdb`, as a manager service: started after the store opened, stopped before it closes."""

    def __init__(
        self,
        store: Store,
        path: Path,
        *,
        allow_sql: str = "no",
        send_to_agents: Callable[[list[int], bytes], int] | None = None,
        max_clients: int = MAX_CLIENTS,
        frame_timeout: float = FRAME_TIMEOUT,
        idle_timeout: float = IDLE_TIMEOUT,
        sql_time_limit: float = SQL_TIME_LIMIT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.path = path
        self.allow_sql = allow_sql
        self.send_to_agents = send_to_agents
        self.max_clients = max_clients
        self.frame_timeout = frame_timeout
        self.idle_timeout = idle_timeout
        self.sql_time_limit = sql_time_limit
        self.clock = clock
        self.warn = RateLimitedLog(log)
        self.stats = {"requests": 0, "errors": 0, "refused_clients": 0, "closed": 0}
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[Any]] = set()
        self._readers: ThreadPoolExecutor | None = None
        self._sql: ThreadPoolExecutor | None = None
        self._sync_last_id = 0  # sync-agent-info-get keeps it between calls, like Wazuh's static
        self._global: dict[str, tuple[Callable[[str], Awaitable[Reply]], bool]] = {
            "get-agent-info": (self._get_agent_info, True),
            "get-all-agents": (self._get_all_agents, True),
            "get-agents-by-connection-status": (self._get_agents_by_connection_status, True),
            "update-keepalive": (self._update_keepalive, True),
            "update-connection-status": (self._update_connection_status, True),
            "update-status-code": (self._update_status_code, True),
            "disconnect-agents": (self._disconnect_agents, True),
            "reset-agents-connection": (self._reset_agents_connection, True),
            "insert-agent": (self._insert_agent, True),
            "delete-agent": (self._delete_agent, True),
            "get-labels": (self._get_labels, True),
            "select-agent-name": (self._select_agent_name, True),
            "select-agent-group": (self._select_agent_group, True),
            "find-agent": (self._find_agent, True),
            "set-agent-groups": (self._set_agent_groups, True),
            "get-distinct-groups": (self._get_distinct_groups, False),
            "sync-agent-info-get": (self._sync_agent_info_get, False),
            "sync-agent-info-set": (self._sync_agent_info_set, True),
            "vacuum": (self._vacuum, False),
            "get_fragmentation": (self._get_fragmentation, False),
            "sql": (self._sql_query, True),
            "insert-agent-group": (self._insert_agent_group, True),
            "delete-group": (self._delete_group, True),
            "select-groups": (self._select_groups, False),
            "find-group": (self._find_group, True),
            "get-group-agents": (self._get_group_agents, True),
            "select-group-belong": (self._select_group_belong, True),
        }

    # -- lifecycle -------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._readers = ThreadPoolExecutor(READ_WORKERS, thread_name_prefix="wdb-read")
        self._sql = ThreadPoolExecutor(1, thread_name_prefix="wdb-sql")
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
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), self.frame_timeout)
            self._server = None
        for pool in (self._readers, self._sql):
            if pool is not None:
                await asyncio.to_thread(pool.shutdown, True, cancel_futures=True)
        self._readers = self._sql = None
        await asyncio.to_thread(self._remove_stale)

    # -- connections -----------------------------------------------------------------------------------

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._clients) >= self.max_clients:
            self.stats["refused_clients"] += 1
            self.warn.warning("clients", "Query socket: %d clients already, one refused", len(self._clients))
            writer.close()
            return
        self._clients.add(task)
        try:
            while True:
                body = await self._read_frame(reader)
                if body is None:
                    return
                text, terminal = split_request(body)
                self.stats["requests"] += 1
                answer = await self.dispatch(text)
                if answer.startswith("err"):
                    self.stats["errors"] += 1
                data = (answer + "\n" if terminal else answer).encode()
                if len(data) > OS_MAXSTR:
                    data = b"err Response too long"
                writer.write(HEADER.pack(len(data)) + data)
                await asyncio.wait_for(writer.drain(), self.frame_timeout)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            self.stats["closed"] += 1
        except asyncio.CancelledError:
            # stop(): end quietly. A cancelled connection task makes asyncio's own stream callback
            # (Python 3.11) log a spurious error, so the cancellation ends here.
            pass
        finally:
            self._clients.discard(task)
            writer.close()

    async def _read_frame(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            first = await asyncio.wait_for(reader.readexactly(1), self.idle_timeout)
        except asyncio.IncompleteReadError:
            return None  # closed between requests: the normal end
        except TimeoutError:
            return None
        try:
            rest = await asyncio.wait_for(reader.readexactly(HEADER.size - 1), self.frame_timeout)
            (length,) = HEADER.unpack(first + rest)
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
        except (sqlite3.Error, OSError, RuntimeError) as error:
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
            entry = self._global.get(command)
            if entry is None:
                return f"err Invalid DB query syntax, near '{near(command)}'"
            handler, needs_argument = entry
            if needs_argument and not sep:
                return f"err Invalid DB query syntax, near '{near(command)}'"
            return await handler(argument)
        if actor == "agent":
            return await self._agent(rest)
        if actor == "remoted":
            return await self._remoted(rest)
        return f"err Invalid DB query actor: '{near(actor)}'"

    async def _read(self, job: Callable[[sqlite3.Connection], T], path: Path | None = None) -> T:
        """Run `job` on a read-only connection in the reader pool."""
        database = self.store.global_db if path is None else path

        def run() -> T:
            with contextlib.closing(schema.connect(database, readonly=True)) as db:
                return job(db)

        if self._readers is None:
            raise RuntimeError("the query socket is stopped")
        return await asyncio.get_running_loop().run_in_executor(self._readers, run)

    async def _committed(self) -> None:
        await asyncio.wait_for(asyncio.wrap_future(self.store.committed()), 60)

    @staticmethod
    def _json(argument: str) -> Any:
        """Parsed JSON. Escapes that decode to lone surrogates are refused here: such a string cannot be
        stored, and a write the writer cannot do would hold up every write queued with it."""
        try:
            data = json.loads(argument)
            dumps(data).encode()
        except (ValueError, RecursionError):
            raise WdbError(f"Invalid JSON syntax, near '{near(argument)}'") from None
        return data

    # -- reads -----------------------------------------------------------------------------------------

    async def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> str:
        def job(db: sqlite3.Connection) -> str:
            return dumps([row_object(row) for row in db.execute(sql, params)])

        return "ok " + await self._read(job)

    async def _get_agent_info(self, argument: str) -> Reply:
        return await self._rows("SELECT * FROM agent WHERE id = ?", (atoi(argument),))

    async def _get_labels(self, argument: str) -> Reply:
        return await self._rows("SELECT * FROM labels WHERE id = ?", (atoi(argument),))

    async def _select_agent_name(self, argument: str) -> Reply:
        return await self._rows("SELECT name FROM agent WHERE id = ?", (atoi(argument),))

    async def _select_agent_group(self, argument: str) -> Reply:
        return await self._rows("SELECT `group` FROM agent WHERE id = ?", (atoi(argument),))

    async def _find_agent(self, argument: str) -> Reply:
        data = self._json(argument)
        name = data.get("name") if isinstance(data, dict) else None
        ip = data.get("ip") if isinstance(data, dict) else None
        if not isinstance(name, str) or not isinstance(ip, str):
            raise WdbError(f"Invalid JSON data, near '{near(argument)}'")
        return await self._rows(
            "SELECT id FROM agent WHERE name = ? AND (register_ip = ? OR register_ip LIKE ? || '/_%')",
            (name, ip, ip),
        )

    async def _paged(self, sql: str, params: tuple[Any, ...], shape: Callable[[sqlite3.Row], Any]) -> Reply:
        def job(db: sqlite3.Connection) -> str:
            status, text, _ = page(shape(row) for row in db.execute(sql, params))
            return f"{status} {text}"

        return await self._read(job)

    async def _get_all_agents(self, argument: str) -> Reply:
        words = argument.split()
        if not words or words[0] not in ("last_id", "context"):
            raise WdbError("Invalid arguments 'last_id' or 'context' not found")
        if words[0] == "context":
            return "ok []"
        if len(words) < 2:
            raise WdbError("Invalid arguments 'last_id' not found")
        return await self._paged(
            "SELECT id FROM agent WHERE id > ? ORDER BY id", (atoi(words[1]),), lambda row: {"id": row[0]}
        )

    async def _get_agents_by_connection_status(self, argument: str) -> Reply:
        words = argument.split()
        if not words:
            raise WdbError("Invalid arguments 'last_id' not found")
        if len(words) < 2:
            raise WdbError("Invalid arguments 'connection_status' not found")
        last_id, status = atoi(words[0]), words[1]
        if len(words) == 2:
            return await self._paged(
                "SELECT id FROM agent WHERE id > ? AND connection_status = ? ORDER BY id",
                (last_id, status),
                lambda row: {"id": row[0]},
            )
        if len(words) < 4:
            raise WdbError("Invalid arguments 'limit' not found")
        limit = atoi(words[3])
        return await self._paged(
            "SELECT id FROM agent WHERE id > ? AND connection_status = ? AND node_name = ? ORDER BY id LIMIT ?",
            (last_id, status, words[2], limit if limit > 0 else -1),
            lambda row: {"id": row[0]},
        )

    async def _get_distinct_groups(self, argument: str) -> Reply:
        last_hash = (argument or "").strip()

        def job(db: sqlite3.Connection) -> str:
            groups: dict[str, str] = {}
            for csv, stored_hash in db.execute(
                "SELECT DISTINCT `group`, group_hash FROM agent WHERE id > 0 AND `group` IS NOT NULL"
            ):
                digest = stored_hash or group_hash(csv.split(","))
                if digest is not None and digest > last_hash:
                    groups.setdefault(digest, csv)
            status, text, _ = page(
                {"group": groups[digest], "group_hash": digest} for digest in sorted(groups)
            )
            return f"{status} {text}"

        return await self._read(job)

    async def _sync_agent_info_get(self, argument: str) -> Reply:
        if argument:
            key, _, value = argument.partition(" ")
            if key == "last_id":
                self._sync_last_id = atoi(value)

        def job(db: sqlite3.Connection) -> tuple[str, str, list[dict[str, Any]]]:
            def rows() -> Iterator[dict[str, Any]]:
                for row in db.execute(
                    "SELECT * FROM agent WHERE id > ? AND sync_status != 'synced' ORDER BY id",
                    (self._sync_last_id,),
                ):
                    full = row_object(row)
                    kind = full.get("sync_status")
                    if kind == "syncreq_keepalive":
                        yield {k: full[k] for k in ("id", "last_keepalive") if k in full}
                    elif kind == "syncreq_status":
                        wanted = (
                            "id",
                            "last_keepalive",
                            "connection_status",
                            "disconnection_time",
                            "status_code",
                        )
                        yield {k: full[k] for k in wanted if k in full}
                    else:
                        item = {k: full[k] for k in SYNCREQ_FIELDS if k in full}
                        item["labels"] = [
                            row_object(label)
                            for label in db.execute("SELECT * FROM labels WHERE id = ?", (full["id"],))
                        ]
                        yield item

            return page(rows())

        status, text, taken = await self._read(job)
        for item in taken:
            self.store.set_sync_status(int(item["id"]), "synced")
        self._sync_last_id = int(taken[-1]["id"]) if status == "due" and taken else 0
        await self._committed()
        return f"{status} {text}"

    async def _select_groups(self, argument: str) -> Reply:
        return await self._rows("SELECT name FROM `group` ORDER BY id")

    async def _find_group(self, argument: str) -> Reply:
        return await self._rows("SELECT id FROM `group` WHERE name = ?", (argument,))

    async def _select_group_belong(self, argument: str) -> Reply:
        def job(db: sqlite3.Connection) -> str:
            return dumps(
                [
                    row[0]
                    for row in db.execute(
                        "SELECT g.name FROM belongs AS b JOIN `group` AS g ON g.id = b.id_group "
                        "WHERE b.id_agent = ? ORDER BY b.priority",
                        (atoi(argument),),
                    )
                ]
            )

        return "ok " + await self._read(job)

    async def _get_group_agents(self, argument: str) -> Reply:
        words = argument.split()
        if not words:
            raise WdbError("Invalid arguments, group name not found.")
        if len(words) < 2 or words[1] != "last_id":
            raise WdbError("Invalid arguments, 'last_id' not found.")
        if len(words) < 3:
            raise WdbError("Invalid arguments, last agent id not found.")
        return await self._paged(
            "SELECT b.id_agent FROM belongs AS b JOIN `group` AS g ON g.id = b.id_group "
            "WHERE g.name = ? AND b.id_agent > ? ORDER BY b.id_agent",
            (words[0], atoi(words[2])),
            lambda row: row[0],
        )

    # -- status writes: through the status model ------------------------------------------------------

    def _sync_status(self, value: object, argument: str) -> str:
        if not isinstance(value, str):
            raise WdbError(f"Invalid JSON data, near '{near(argument)}'")
        if value not in SYNC_STATUSES:
            raise WdbError("Cannot execute Global database query; CHECK constraint failed: sync_status")
        return value

    def _known(self, agent_id: int) -> bool:
        return agent_id in self.store.agents

    async def _update_keepalive(self, argument: str) -> Reply:
        data = self._json(argument)
        agent_id = _json_int(data.get("id")) if isinstance(data, dict) else None
        status = data.get("connection_status") if isinstance(data, dict) else None
        if agent_id is None or not isinstance(status, str) or not isinstance(data.get("sync_status"), str):
            raise WdbError(f"Invalid JSON data, near '{near(argument)}'")
        sync = self._sync_status(data["sync_status"], argument)
        event = KEEPALIVE_EVENTS.get(status)
        if event is None:
            raise WdbError(
                f"Cannot execute Global database query; connection_status '{near(status)}' cannot come "
                "with a keep-alive (pending or active)"
            )
        await self._change_status(StatusUpdate(agent_id, event, self.clock()), sync, touch=True)
        return "ok"

    async def _update_connection_status(self, argument: str) -> Reply:
        data = self._json(argument)
        if not isinstance(data, dict):
            raise WdbError(f"Invalid JSON data, near '{near(argument)}'")
        agent_id = _json_int(data.get("id"))
        code = _json_int(data.get("status_code"))
        status = data.get("connection_status")
        if (
            agent_id is None
            or code is None
            or not isinstance(status, str)
            or not isinstance(data.get("sync_status"), str)
        ):
            raise WdbError(f"Invalid JSON data, near '{near(argument)}'")
        sync = self._sync_status(data["sync_status"], argument)
        event = STATUS_EVENTS.get((status, code))
        if event is None:
            raise WdbError(
                f"Cannot execute Global database query; the status model has no transition to "
                f"'{near(status)}' with status_code {code}"
            )
        await self._change_status(
            StatusUpdate(agent_id, event, self.clock()), sync, touch=event is Trigger.STARTUP
        )
        return "ok"

    async def _update_status_code(self, argument: str) -> Reply:
        data = self._json(argument)
        if not isinstance(data, dict):
            raise WdbError(f"Invalid JSON data, near '{near(argument)}'")
        agent_id = _json_int(data.get("id"))
        code = _json_int(data.get("status_code"))
        version = data.get("version")
        if (
            agent_id is None
            or code is None
            or not (version is None or isinstance(version, str))
            or not isinstance(data.get("sync_status"), str)
        ):
            raise WdbError(f"Invalid JSON data, near '{near(argument)}'")
        sync = self._sync_status(data["sync_status"], argument)
        try:
            status_code = StatusCode(code)
        except ValueError:
            raise WdbError(f"Cannot execute Global database query; unknown status_code {code}") from None
        refused = StatusUpdate(
            agent_id, Trigger.VERSION_REFUSED, self.clock(), code=status_code, version=version
        )
        await self._change_status(refused, sync)
        return "ok"

    async def _change_status(self, update: StatusUpdate, sync: str, *, touch: bool = False) -> None:
        """A status command: the status model (and last_keepalive with `touch`), then sync_status, answered
        once committed. An agent global.db does not know changes nothing."""
        if self._known(update.agent_id):
            self.store.submit(update)
            if touch:
                self.store.touch(update.agent_id, update.at)
            self.store.set_sync_status(update.agent_id, sync)
            await self._committed()

    async def _disconnect_agents(self, argument: str) -> Reply:
        words = argument.split()
        if not words:
            raise WdbError("Invalid arguments last id not found")
        if len(words) < 2:
            raise WdbError("Invalid arguments keepalive not found")
        if len(words) < 3:
            raise WdbError("Invalid arguments sync_status not found")
        last_id, threshold, sync = atoi(words[0]), atoi(words[1]), words[2]
        if sync not in SYNC_STATUSES:
            raise WdbError("Cannot execute Global database query; CHECK constraint failed: sync_status")
        agents = self.store.agents
        stale = (
            {"id": agent_id}
            for agent_id in sorted(a for a in agents if a > last_id)
            if agents[agent_id].status in LIVE and (agents[agent_id].last_keepalive or 0) < threshold
        )
        status, text, taken = page(stale)
        now = self.clock()
        for item in taken:
            self.store.submit(StatusUpdate(item["id"], Trigger.TIMEOUT, now))
            self.store.set_sync_status(item["id"], sync)
        await self._committed()
        return f"{status} {text}"

    async def _reset_agents_connection(self, argument: str) -> Reply:
        sync = argument.strip()
        if sync not in SYNC_STATUSES:
            raise WdbError("Cannot execute Global database query; CHECK constraint failed: sync_status")
        live = [agent_id for agent_id, _ in self.store.live_agents()]
        self.store.reset_connections()
        for agent_id in live:
            self.store.set_sync_status(agent_id, sync)
        await self._committed()
        return "ok"

    # -- agent rows --------------------------------------------------------------------------------------

    async def _insert_agent(self, argument: str) -> Reply:
        data = self._json(argument)
        if not isinstance(data, dict):
            raise WdbError(f"Invalid JSON data, near '{near(argument)}'")
        agent_id = _json_int(data.get("id"))
        date_add = _json_int(data.get("date_add"))
        name = data.get("name")
        if agent_id is None or agent_id <= 0 or date_add is None or not isinstance(name, str) or not name:
            raise WdbError(f"Invalid JSON data, near '{near(argument)}'")

        def text(key: str) -> str | None:
            value = data.get(key)
            return value if isinstance(value, str) else None

        groups = tuple(g for g in (text("group") or "").split(",") if g)
        if not all(valid_group(g) for g in groups):
            raise WdbError(f"Invalid JSON data, near '{near(argument)}'")
        agent = InsertedAgent(
            agent_id, name, text("ip"), text("register_ip"), text("internal_key"), groups, date_add
        )
        if not self.store.insert_agent(agent):
            raise WdbError("Cannot execute Global database query; UNIQUE constraint failed: agent.id")
        await self._committed()
        return "ok"

    async def _delete_agent(self, argument: str) -> Reply:
        agent_id = atoi(argument)
        if agent_id == schema.MANAGER_ID:
            raise WdbError("Error deleting agent from agent table in global.db.")
        self.store.remove_agents([agent_id], self.clock())
        await self._committed()
        return "ok"

    async def _sync_agent_info_set(self, argument: str) -> Reply:
        data = self._json(argument)
        if not isinstance(data, list):
            raise WdbError(f"Invalid JSON data, near '{near(argument)}'")
        updates: list[tuple[ColumnUpdate, Trigger | None]] = []
        for item in data:
            agent_id = _json_int(item.get("id")) if isinstance(item, dict) else None
            if agent_id is None or not isinstance(item, dict):
                raise WdbError(f"Invalid JSON data, near '{near(argument)}'")
            columns = {key: item.get(key) for key in SYNC_COLUMNS}  # missing -> NULL, as Wazuh binds
            if not isinstance(columns["name"], str):
                raise WdbError("Cannot execute Global database query; NOT NULL constraint failed: agent.name")
            if not all(_storable(value) for value in columns.values()):
                raise WdbError(f"Invalid JSON data, near '{near(argument)}'")
            labels = item.get("labels")
            label_rows = None
            if isinstance(labels, list):
                label_rows = tuple(
                    (str(label["key"]), str(label["value"]))
                    for label in labels
                    if isinstance(label, dict) and "key" in label and "value" in label
                )
            event = None
            status = item.get("connection_status")
            if isinstance(status, str):
                code = _json_int(item.get("status_code")) or 0
                event = STATUS_EVENTS.get((status, code))
                if event is None and status != ConnectionStatus.NEVER_CONNECTED.value:
                    raise WdbError(
                        f"Cannot execute Global database query; the status model has no transition to "
                        f"'{near(status)}' with status_code {code}"
                    )
            updates.append((ColumnUpdate(agent_id, columns, label_rows), event))
        now = self.clock()
        for update, event in updates:
            if not self._known(update.agent_id):
                continue
            self.store.update_columns(update)
            if event is not None:
                self.store.submit(StatusUpdate(update.agent_id, event, now))
        await self._committed()
        return "ok"

    # -- groups ------------------------------------------------------------------------------------------

    async def _insert_agent_group(self, argument: str) -> Reply:
        name = argument.strip()
        if not valid_group(name):
            raise WdbError("Error inserting group in global.db.")
        self.store.change_groups([GroupChange(GroupChangeKind.CREATE, (name,))])
        await self._committed()
        return "ok"

    async def _delete_group(self, argument: str) -> Reply:
        name = argument.strip()
        if name == DEFAULT_GROUP or not valid_group(name):
            raise WdbError("Error deleting group in global.db.")
        self.store.change_groups([GroupChange(GroupChangeKind.DELETE, (name,))])
        await self._committed()
        return "ok"

    async def _set_agent_groups(self, argument: str) -> Reply:
        data = self._json(argument)
        if not isinstance(data, dict):
            raise WdbError("Invalid JSON data, missing required fields")
        mode, items = data.get("mode"), data.get("data")
        if not isinstance(mode, str) or not isinstance(items, list):
            raise WdbError("Invalid JSON data, missing required fields")
        if mode not in MODES:
            raise WdbError(f"Invalid mode '{near(mode)}' in set_agent_groups command")
        sync = data.get("sync_status", "synced")
        if sync not in ("synced", "syncreq"):
            raise WdbError("An error occurred during the set of the groups")
        changes = []
        for item in items:
            agent_id = _json_int(item.get("id")) if isinstance(item, dict) else None
            groups = item.get("groups") if isinstance(item, dict) else None
            if (
                agent_id is None
                or not self._known(agent_id)
                or not isinstance(groups, list)
                or not all(isinstance(g, str) and valid_group(g) for g in groups)
            ):
                raise WdbError("An error occurred during the set of the groups")
            changes.append(GroupChange(GroupChangeKind.SET, tuple(groups), agent_id, GroupMode(mode), sync))
        self.store.change_groups(changes)
        await self._committed()
        return "ok"

    # -- upkeep ------------------------------------------------------------------------------------------

    async def _vacuum(self, argument: str) -> Reply:
        after = await asyncio.wrap_future(self.store.vacuum())
        return "ok " + dumps({"fragmentation_after_vacuum": after})

    async def _get_fragmentation(self, argument: str) -> Reply:
        state = await self._read(maintenance.fragmentation)
        return "ok " + dumps(state.as_json())

    async def _agent(self, rest: str) -> Reply:
        id_text, sep, query = rest.partition(" ")
        if not sep:
            return f"err Invalid DB query syntax, near '{near(id_text)}'"
        if not re.fullmatch(r"[+-]?\d+", id_text):
            return f"err Invalid agent ID '{near(id_text)}'"
        agent_id = int(id_text)
        if agent_id != schema.MANAGER_ID and not self._known(agent_id):
            return "err Agent not found"
        command = query.partition(" ")[0]
        path = self.store.agent_db_path(agent_id)
        if command not in ("vacuum", "get_fragmentation"):
            return f"err Invalid DB query syntax, near '{near(command)}'"
        if not await asyncio.to_thread(path.exists):
            return f"err Couldn't open DB for agent {agent_id}"
        if command == "vacuum":
            after = await asyncio.wrap_future(self.store.vacuum(agent_id))
            return "ok " + dumps({"fragmentation_after_vacuum": after})
        state = await self._read(maintenance.fragmentation, path)
        return "ok " + dumps(state.as_json())

    # -- sql ---------------------------------------------------------------------------------------------

    async def _sql_query(self, argument: str) -> Reply:
        if self.allow_sql != ALLOW_SQL_READ_ONLY:
            return "err SQL queries are disabled: <database><allow_sql> is 'no' (set it to 'read-only')"
        if self._sql is None:
            raise RuntimeError("the query socket is stopped")
        path = self.store.global_db
        return await asyncio.get_running_loop().run_in_executor(
            self._sql, run_read_only_sql, path, argument, self.sql_time_limit
        )

    # -- remoted extensions ------------------------------------------------------------------------------

    async def _remoted(self, rest: str) -> Reply:
        command, _, argument = rest.partition(" ")
        if command != "force-reconnect":
            return f"err Invalid DB query syntax, near '{near(command)}'"
        name = argument.strip()
        if not name:
            return f"err Invalid DB query syntax, near '{near(command)}'"

        def members(db: sqlite3.Connection) -> list[int] | None:
            if db.execute("SELECT 1 FROM `group` WHERE name = ?", (name,)).fetchone() is None:
                return None
            return [
                row[0]
                for row in db.execute(
                    "SELECT b.id_agent FROM belongs AS b JOIN `group` AS g ON g.id = b.id_group "
                    "WHERE g.name = ? ORDER BY b.id_agent",
                    (name,),
                )
            ]

        ids = await self._read(members)
        if ids is None:
            return f"err Group '{near(name)}' not found"
        sent = 0 if self.send_to_agents is None else self.send_to_agents(ids, FORCE_RECONNECT)
        log.info("Force reconnect of group %s: %d members, %d connected told", name, len(ids), sent)
        return "ok " + dumps({"group": name, "members": len(ids), "sent": sent})


# -- read-only SQL ------------------------------------------------------------------------------------------

_ALLOWED_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_RECURSIVE,
}


def _authorize(
    action: int, arg1: str | None, arg2: str | None, database: str | None, source: str | None
) -> int:
    """Only reading: no writes, no PRAGMA, no ATTACH, no transactions, no extension loading."""
    if action not in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION and arg2 is not None and arg2.lower() == "load_extension":
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def run_read_only_sql(path: Path, sql: str, time_limit: float = SQL_TIME_LIMIT) -> Reply:
    """One read-only statement on a read-only connection; `ok [rows]` or Wazuh's `err Cannot execute ...`."""
    try:
        with contextlib.closing(schema.connect(path, readonly=True)) as db:
            db.execute("PRAGMA query_only = 1")
            deadline = time.monotonic() + time_limit
            db.set_progress_handler(lambda: 1 if time.monotonic() > deadline else 0, 10_000)
            db.set_authorizer(_authorize)
            cursor = db.execute(sql)
            parts: list[str] = []
            size = 2
            for row in cursor:
                text = dumps(row_object(row))
                size += len(text.encode()) + 1
                if size > OS_MAXSTR - 3:
                    return (
                        f"err Cannot execute Global database query; the answer passes {OS_MAXSTR} bytes: "
                        "narrow it (WHERE, LIMIT/OFFSET)"
                    )
                parts.append(text)
            return "ok [" + ",".join(parts) + "]"
    except (sqlite3.Error, sqlite3.Warning) as error:
        message = str(error)
        if message == "interrupted":
            message = f"interrupted after {time_limit:g} s"
        return f"err Cannot execute Global database query; {message}"
