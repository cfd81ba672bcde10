"""`SharedPushes`: sending a group's merged.mg to the agents this remoted process holds (reference 15.4).

`#!-up file <md5> merged.mg\n`, the file in chunks of at most 900 bytes (`shared.merge.chunks`), then
`#!-close file `, each sealed like any reply. The danger is the keep-alive ack: a push must never fill the
socket's send buffer (remoted drops a reply past `SEND_BUFFER_SIZE`) nor hold the loop. So a push is a
coroutine that sends a few messages, yields, and waits while the socket's buffer is above PUSH_BUFFER_LIMIT;
UDP is paced as Wazuh does (1 s after the 32nd data chunk, then after every 31 more). The file is read off
the loop once per md5 and checked against it. Who asked is told how each push ended (`done`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Final

from agentpulse.remoted.server import Remoted
from agentpulse.remoted.session import Session
from agentpulse.shared.merge import chunks, md5_hex
from agentpulse.shared.names import SHARED_FILE
from agentpulse.wire import control

log = logging.getLogger(__name__)

PUSH_BUFFER_LIMIT: Final = 32 * 1024  # bytes queued on a socket before a push waits (the ack has room)
MESSAGES_PER_STEP: Final = 16  # messages sealed and written at once (one write, ~15 KB), then a yield
BUFFER_WAIT: Final = 0.005  # the first wait for a full socket; doubled up to BUFFER_WAIT_MAX
BUFFER_WAIT_MAX: Final = 0.2  # a slow reader costs a push five wake-ups a second, not two hundred
STALL_TIMEOUT: Final = 30.0  # a socket that takes nothing for this long ends the push
UDP_FIRST_BURST: Final = 32  # data chunks before the first pause (send_file_toagent: `if (i > 30)`)
UDP_BURST: Final = 31
UDP_PAUSE: Final = 1.0
CACHE_FILES: Final = 8  # merged.mg contents kept by md5 (a rollout pushes one file to many agents)

PushDone = Callable[[int, str, bool], None]  # agent id, md5, whether every message was queued


class SharedPushes:
    def __init__(self, remoted: Remoted, done: PushDone, *, udp_pause: float = UDP_PAUSE) -> None:
        self.remoted = remoted
        self.done = done
        self.udp_pause = udp_pause
        self._files: OrderedDict[str, bytes] = OrderedDict()
        self._tasks: dict[int, asyncio.Task[None]] = {}  # agent -> its push in flight
        self.pushed = self.failed = 0

    def holds(self, agent_id: int) -> bool:
        bindings = self.remoted.bindings
        return bindings.session_of(agent_id) is not None or bindings.udp_peer_of(agent_id) is not None

    def push(self, agent_id: int, md5: str, path: str, *, quiet: bool = False) -> None:
        """Start sending `path` (whose md5 must be `md5`) to the agent; `done` is called once, either way,
        except with `quiet` when this process does not hold the agent (a push asked of every worker)."""
        if agent_id in self._tasks or not self.holds(agent_id):
            if not quiet:
                self.done(agent_id, md5, False)
            return
        task = asyncio.create_task(self._push(agent_id, md5, Path(path)), name=f"push-{agent_id}")
        self._tasks[agent_id] = task

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _push(self, agent_id: int, md5: str, path: Path) -> None:
        ok = False
        try:
            data = await self._content(md5, path)
            ok = data is not None and await self._send(agent_id, md5, data)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # one push fails; the fleet goes on
            log.warning("Unable to send file '%s' to agent ID '%03d': %s", SHARED_FILE, agent_id, error)
        finally:
            self._tasks.pop(agent_id, None)
            if ok:
                self.pushed += 1
            else:
                self.failed += 1
            self.done(agent_id, md5, ok)

    async def _content(self, md5: str, path: Path) -> bytes | None:
        data = self._files.get(md5)
        if data is not None:
            self._files.move_to_end(md5)
            return data
        try:
            data = await asyncio.to_thread(path.read_bytes)
        except OSError as error:
            log.warning("Cannot read %s for a push: %s", path, error)
            return None
        if md5_hex(data) != md5:
            return None  # rebuilt since the push was asked for: the next keep-alive asks with the new md5
        self._files[md5] = data
        while len(self._files) > CACHE_FILES:
            self._files.popitem(last=False)
        return data

    async def _send(self, agent_id: int, md5: str, data: bytes) -> bool:
        bindings = self.remoted.bindings
        entry = self.remoted.keys.entries.get(agent_id)
        session = bindings.session_of(agent_id)
        if entry is None:
            return False
        messages = [control.build_file_update(md5, SHARED_FILE), *chunks(data), control.FILE_CLOSE]
        if session is None:
            return await self._send_udp(agent_id, messages)
        for start in range(0, len(messages), MESSAGES_PER_STEP):
            if start:
                await asyncio.sleep(0)
            transport = session.transport
            full = transport is not None and transport.get_write_buffer_size() > PUSH_BUFFER_LIMIT
            if full and not await self._drained(session):
                return False
            if bindings.session_of(agent_id) is not session:
                return False
            step = messages[start : start + MESSAGES_PER_STEP]
            if not session.send_frames([self.remoted.outbound.seal(entry, payload) for payload in step]):
                return False
        return True

    @staticmethod
    async def _drained(session: Session) -> bool:
        deadline = time.monotonic() + STALL_TIMEOUT
        wait = BUFFER_WAIT
        while not session.closed and time.monotonic() < deadline:
            transport = session.transport
            if transport is None or transport.get_write_buffer_size() <= PUSH_BUFFER_LIMIT // 2:
                return transport is not None
            await asyncio.sleep(wait)
            wait = min(2 * wait, BUFFER_WAIT_MAX)
        return False

    async def _send_udp(self, agent_id: int, messages: list[bytes]) -> bool:
        """Wazuh's "no flood" pacing: a pause after the 32nd data chunk, then after every 31 more."""
        sent_chunks = 0
        for index, payload in enumerate(messages):
            if not self.remoted.outbound.send_to_agent(agent_id, payload):
                return False
            if 0 < index < len(messages) - 1:
                sent_chunks += 1
                if sent_chunks == UDP_FIRST_BURST or (
                    sent_chunks > UDP_FIRST_BURST and (sent_chunks - UDP_FIRST_BURST) % UDP_BURST == 0
                ):
                    await asyncio.sleep(self.udp_pause)
            elif index % MESSAGES_PER_STEP == 0:
                await asyncio.sleep(0)
        return True
