"""A throwaway PostgreSQL on this machine for the tests and `make cluster-demo`: initdb and pg_ctl run as
the `postgres` user (via `runuser` when we are root) in a folder it owns, on 127.0.0.1 and a free port.

The danger is what is left behind: `remove()` stops the server (immediate mode) and deletes the folder,
and the server trusts every local connection, so it is for this machine's tests and demos only.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Final

PG_USER: Final = "postgres"
LOOPBACK: Final = "127.0.0.1"
START_TIMEOUT: Final = 30.0


class LocalPostgresError(RuntimeError):
    """initdb or pg_ctl failed: the message carries their output."""


def unavailable() -> str | None:
    """None when a throwaway cluster can be made here, else why not (a test skips with it)."""
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        return "PostgreSQL binaries (initdb, pg_ctl) are not on PATH"
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        return f"there is no {PG_USER} user to run PostgreSQL as"
    if os.geteuid() != 0 and pwd.getpwuid(os.geteuid()).pw_name != PG_USER:
        return f"initdb runs as {PG_USER} through runuser, which needs root"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


class LocalPostgres:
    """A cluster in `root` (root/data, root/postgres.log, the unix socket in root)."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port = port or _free_port()

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, dbname: str) -> str:
        return f"postgresql://{PG_USER}@{LOOPBACK}:{self.port}/{dbname}"

    def _as_postgres(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = ["runuser", "-u", PG_USER, "--", *argv] if os.geteuid() == 0 else list(argv)
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if check and done.returncode != 0:
            raise LocalPostgresError(f"{argv[0]} failed ({done.returncode}): {done.stderr or done.stdout}")
        return done

    def _check_reachable(self) -> None:
        """The postgres user must be able to walk down to root: say which folder stops it, if one does."""
        if os.geteuid() != 0:
            return
        pg_uid = pwd.getpwnam(PG_USER).pw_uid
        for folder in reversed(self.root.resolve().parents):
            info = folder.stat()
            if info.st_uid != pg_uid and not info.st_mode & 0o001:
                raise LocalPostgresError(
                    f"{PG_USER} cannot reach {self.root}: {folder} is not searchable by other users "
                    "(chmod o+x it, or choose a folder under one that is)"
                )

    def start(self) -> None:
        """initdb (once) and start; waits until it accepts connections."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._check_reachable()
        if os.geteuid() == 0:
            shutil.chown(self.root, PG_USER, PG_USER)
        self.root.chmod(0o700)
        if not (self.data / "PG_VERSION").exists():
            self._as_postgres(
                "initdb", "-D", str(self.data), "-A", "trust", "-U", PG_USER, "-E", "UTF8", "--no-sync"
            )
        self.resume()

    def resume(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses={LOOPBACK} -k {self.root} -c fsync=off "
            "-c max_connections=200 -c shared_buffers=64MB"
        )
        self._as_postgres("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, self.port), 1):
                return
            time.sleep(0.1)
        raise LocalPostgresError(f"PostgreSQL did not listen on port {self.port}: {self.log_tail()}")

    def pause(self) -> None:
        """Stop the server (fast: connections are cut), keeping its data for `resume()`."""
        self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        """Stop it if it runs, and delete everything under root."""
        if self.data.exists():
            self._as_postgres("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self, size: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text(errors="replace")[-size:]
        return ""
