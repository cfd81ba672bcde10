"""A throwaway PostgreSQL cluster for tests and benchmarks: initdb + pg_ctl as the `postgres` user.

The cluster lives in a folder under /tmp that `postgres` owns, listens on 127.0.0.1 only on a free port
(unix sockets in the same folder), trusts local connections, and is removed by `stop()`. `pause()` and
`resume()` stop and start the same cluster (the outage tests). Skipped, not failed, where initdb is absent.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.ports import free_port as free_port

PG_USER = "postgres"
START_TIMEOUT = 30.0


def available() -> str | None:
    """None when a cluster can be made here, else why not."""
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        return "PostgreSQL binaries (initdb, pg_ctl) are not on PATH"
    if os.geteuid() != 0 and os.environ.get("USER") != PG_USER:
        return "the tests run initdb as the postgres user via runuser, which needs root"
    try:
        import pwd

        pwd.getpwnam(PG_USER)
    except KeyError:
        return "there is no postgres user to run the cluster"
    return None


class PostgresServer:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="agentpulse-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.log = self.root / "postgres.log"
        shutil.chown(self.root, PG_USER, PG_USER)
        self.root.chmod(0o755)

    def _as_postgres(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(argv) if os.geteuid() != 0 else ["runuser", "-u", PG_USER, "--", *argv]
        return subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        self._as_postgres(
            "initdb", "-D", str(self.data), "-A", "trust", "-U", PG_USER, "--no-sync", "-E", "UTF8"
        )
        self.resume()

    def resume(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c max_connections=200 -c shared_buffers=64MB"
        )
        self._as_postgres("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 1):
                return
            time.sleep(0.1)
        raise RuntimeError(f"PostgreSQL did not listen on {self.port}: {self.log.read_text()[-2000:]}")

    def pause(self) -> None:
        """Stop the server (fast shutdown: connections are cut), keeping its data."""
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def stop(self) -> None:
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def postmaster(self) -> int:
        """The server's process id (the first line of postmaster.pid)."""
        return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """A fresh database on this server; its DSN."""
        import psycopg

        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)
