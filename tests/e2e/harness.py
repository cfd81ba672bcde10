"""A real manager process in a temporary home, on a free loopback port, and helpers to watch its database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from agentpulse.paths import Home
from agentpulse.store.sqlite import schema
from agentpulse.wire.counters import SenderCounter
from agentpulse.wire.keys import AgentKey, KeysFile
from tests.ports import free_port as free_port

LOOPBACK = "127.0.0.1"

# Every manager process started since the last `stop_leftovers()` (the suite calls it after each test).
_started: list[subprocess.Popen[bytes]] = []


def stop_leftovers(timeout: float = 10.0) -> int:
    """Stop every manager process a test started and left running (SIGTERM, SIGKILL after `timeout`);
    returns how many. A test that fails between two nodes' starts, before its `try`, would otherwise
    leave the first node running into the next tests, holding its PostgreSQL sessions and leader lock."""
    left = [process for process in _started if process.poll() is None]
    for process in left:
        process.terminate()
    for process in left:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    _started.clear()
    return len(left)


@dataclass
class ManagerSettings:
    protocols: str = "tcp"
    connection_grace: float = 1.0
    keepalive_enabled: bool = False
    keepalive_interval: float = 60
    keepalive_timeout: float = 180
    disconnection_time: str = "15m"
    overtake_time: int = 60
    allow_higher_versions: bool = False
    flush_interval: float = 0.1
    extra_remote: str = ""
    workers: int = 1
    nats: str = "<nats><enabled>no</enabled></nats>"
    database: str = ""  # extra <database> options
    auth: str | None = None  # the options of an <auth> block (port and local_ip are set): None, no block
    sections: str = ""  # more sections, verbatim (e.g. <metrics>)
    # Shared-file pushes off unless a test is about them: other tests read "the next message after a
    # keep-alive", and a push (the default group's merged.mg) would come in between.
    shared_push: bool = False
    api: str | None = None  # the options of an <api> block (port and host are set): None, no block
    node_name: str = "node01"  # <global><node_name>: unique per node of a cluster

    def render(self, port: int, auth_port: int = 0, api_port: int = 0) -> str:
        yes = {True: "yes", False: "no"}
        api = ""
        if self.api is not None:
            api = f"<api><port>{api_port}</port><host>{LOOPBACK}</host>{self.api}</api>"
        auth = ""
        if self.auth is not None:
            auth = f"<auth><port>{auth_port}</port><local_ip>{LOOPBACK}</local_ip>{self.auth}</auth>"
        return f"""<ossec_config>
  <remote>
    <connection>secure</connection>
    <port>{port}</port>
    <protocol>{self.protocols}</protocol>
    <local_ip>{LOOPBACK}</local_ip>
    <connection_grace>{self.connection_grace}</connection_grace>
    <connection_overtake_time>{self.overtake_time}</connection_overtake_time>
    <keyupdate_interval>1</keyupdate_interval>
    <workers>{self.workers}</workers>
    <shared_push>{yes[self.shared_push]}</shared_push>
    <agents><allow_higher_versions>{yes[self.allow_higher_versions]}</allow_higher_versions></agents>
    <manager_keepalive>
      <enabled>{yes[self.keepalive_enabled]}</enabled>
      <interval>{self.keepalive_interval}</interval>
      <timeout>{self.keepalive_timeout}</timeout>
    </manager_keepalive>
    {self.extra_remote}
  </remote>
  <global>
    <agents_disconnection_time>{self.disconnection_time}</agents_disconnection_time>
    <node_name>{self.node_name}</node_name>
  </global>
  {self.nats}
  <database><flush_interval>{self.flush_interval}</flush_interval>{self.database}</database>
  {auth}
  {self.sections}
  {api}
</ossec_config>
"""


@dataclass
class ManagerProcess:
    root: Path
    settings: ManagerSettings = field(default_factory=ManagerSettings)
    port: int = field(default_factory=free_port)
    auth_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    pg_dsn: str | None = None  # set by `use_postgresql`: `query` then reads PostgreSQL
    # The running process was already sent a stop (SIGTERM/SIGINT): `stop` then only waits, since a
    # second signal would force the exit (StopGuard), maybe before the last commit, and exit 1.
    stop_signalled: bool = False

    def use_postgresql(self, dsn: str) -> None:
        """Run this manager on PostgreSQL at `dsn` (`<database><backend>postgresql`)."""
        self.pg_dsn = dsn
        self.settings.database += f"<backend>postgresql</backend><dsn>{dsn}</dsn>"

    @property
    def home(self) -> Home:
        return Home(self.root)

    def write_config(self) -> None:
        self.home.create_layout()
        self.home.ossec_conf.write_text(self.settings.render(self.port, self.auth_port, self.api_port))

    def add_agents(self, count: int, ip: str = "any", prefix: str = "agent") -> list[AgentKey]:
        keys_path = self.home.client_keys
        self.home.create_layout()
        keys = KeysFile.parse(keys_path.read_text() if keys_path.exists() else "")
        start = len(keys.entries)
        added = keys.add_many((f"{prefix}-{start + index + 1:05d}" for index in range(count)), ip)
        tmp = keys_path.with_suffix(".tmp")
        tmp.write_text(keys.render())
        tmp.replace(keys_path)
        return added

    def start(self, timeout: float = 20.0, *, own_group: bool = False) -> None:
        """Start and wait until it listens. `own_group`: the manager leads a process group of its own, as
        in a terminal, where Ctrl-C goes to the whole group (see `interrupt_group`)."""
        self.write_config()
        self.stop_signalled = False
        with open(self.root / "manager.out", "ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "agentpulse",
                    "start",
                    "--home",
                    str(self.root),
                    "--log-level",
                    "debug",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=own_group,
            )
        _started.append(self.process)
        deadline = time.monotonic() + timeout
        state = self.home.remoted_state
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"manager exited with {self.process.returncode}:\n{self.output()}")
            if state.exists() and f":{self.port}/" in state.read_text():
                return
            time.sleep(0.05)
        raise TimeoutError(f"manager did not start:\n{self.output()}")

    def output(self) -> str:
        path = self.root / "manager.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)
        if signum in (signal.SIGTERM, signal.SIGINT):
            self.stop_signalled = True

    def interrupt_group(self, timeout: float = 20.0) -> int:
        """Ctrl-C in the manager's terminal: SIGINT to its whole process group (started with own_group)."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGINT)
        code = self.process.wait(timeout)
        self.process = None
        return code

    def stop(self, timeout: float = 20.0) -> int:
        if self.process is None:
            return 0
        if self.process.poll() is None and not self.stop_signalled:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        with contextlib.suppress(FileNotFoundError):
            self.home.remoted_state.unlink()
        self.process = None
        return code

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None
        with contextlib.suppress(FileNotFoundError):
            self.home.remoted_state.unlink()

    # -- reading global.db the way an operator's tool does ---------------------------------------------

    def query(self, sql: str, *params: object) -> list[sqlite3.Row]:
        if self.pg_dsn is not None:
            import psycopg

            from tests.store.databases import postgres_sql

            with psycopg.connect(self.pg_dsn) as conn:
                return conn.execute(postgres_sql(sql), params).fetchall()  # type: ignore[arg-type,return-value]
        db = schema.connect(self.home.global_db, readonly=True)
        try:
            return list(db.execute(sql, params))
        finally:
            db.close()

    def status(self, agent_id: int) -> tuple[str, int]:
        rows = self.query("SELECT connection_status, status_code FROM agent WHERE id = ?", agent_id)
        return (rows[0][0], rows[0][1]) if rows else ("missing", -1)

    def statuses(self) -> dict[int, tuple[str, int]]:
        rows = self.query("SELECT id, connection_status, status_code FROM agent WHERE id != 0")
        return {row[0]: (row[1], row[2]) for row in rows}

    def history(self, agent_id: int) -> list[tuple[str, str, int]]:
        rows = self.query(
            "SELECT from_status, to_status, status_code FROM agent_status_history WHERE agent_id = ? ORDER BY seq",
            agent_id,
        )
        return [(row[0], row[1], row[2]) for row in rows]

    def wait_for(self, agent_id: int, status: str, code: int | None = None, timeout: float = 10.0) -> float:
        """Wait until the agent has that status (and code); returns the seconds it took.

        Blocking: inside a test's event loop use `reach()`, or the loop's own sockets stand still.
        """
        return asyncio.run(self.reach(agent_id, status, code, timeout))

    async def reach(
        self, agent_id: int, status: str, code: int | None = None, timeout: float = 10.0
    ) -> float:
        start = time.monotonic()
        seen: tuple[str, int] = ("missing", -1)
        while time.monotonic() - start < timeout:
            seen = self.status(agent_id)
            if seen[0] == status and (code is None or seen[1] == code):
                return time.monotonic() - start
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"agent {agent_id}: expected {status}/{code}, still {seen}\n{self.output()[-3000:]}"
        )

    def wait_for_all(self, status: str, count: int, timeout: float = 10.0) -> float:
        return asyncio.run(self.reach_all(status, count, timeout))

    async def reach_all(self, status: str, count: int, timeout: float = 10.0) -> float:
        start = time.monotonic()
        matching = 0
        while time.monotonic() - start < timeout:
            matching = sum(1 for seen in self.statuses().values() if seen[0] == status)
            if matching >= count:
                return time.monotonic() - start
            await asyncio.sleep(0.1)
        raise AssertionError(f"{matching} of {count} agents are {status}\n{self.output()[-3000:]}")


def agentpulse_bin(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else name


def run_cli(name: str, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, AGENTPULSE_HOME=str(home))
    return subprocess.run([agentpulse_bin(name), *args], capture_output=True, text=True, env=env, timeout=60)


@dataclass
class AgentProcess:
    home: Home
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "agentpulse", "agent", "--home", str(self.home.root)]
        with open(self.home.root / "agent.out", "ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [*command, "--log-level", "debug"], stdout=log, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        path = self.home.root / "agent.out"
        return path.read_text(errors="replace") if path.exists() else ""

    def terminate(self, timeout: float = 10.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self.process = None
        return code

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None

    def counter(self) -> SenderCounter:
        return SenderCounter.from_text(self.home.sender_counter.read_bytes())


AgentFactory = Callable[..., AgentProcess]


def wait_until(
    check: Callable[[], bool], what: str, timeout: float = 10.0, *, detail: Callable[[], str] | None = None
) -> None:
    """Poll `check` until true; at the timeout fail, with `detail()` (e.g. a process's log) if given."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{detail()}" if detail is not None else ""))
