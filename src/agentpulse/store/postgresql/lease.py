"""`NodeLease`: this node's row in the `node` table, renewed every second on a thread and connection of its
own, so a slow flush never delays it. The database decides the node's epoch (one more at each start) and
every time (now()), so nodes with different clocks agree on whose lease expired.

The danger is two processes with one `<node_name>`: the second start bumps the epoch, the first one's
renewals then match no row, and it says so (an error line, once) instead of silently sharing a name.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass
from typing import Any

import psycopg

from agentpulse.store.postgresql.connect import redacted

log = logging.getLogger(__name__)

RENEW_INTERVAL = 1.0  # seconds between renewals
LEASE_TIME = 3.0  # seconds a lease lasts without renewal: three renewals missed
NOW = "extract(epoch FROM clock_timestamp())::float8"


@dataclass(frozen=True, slots=True)
class NodeRow:
    name: str
    epoch: int
    host: str | None
    started_at: float
    renewed_at: float
    expires_at: float
    expired: bool  # by the database's clock, at the time of the read
    now: float  # the database's clock at the time of the read


def acquire(db: psycopg.Connection[Any], name: str, host: str, lease_time: float = LEASE_TIME) -> int:
    """Take (or take again) the node's row; returns its new epoch."""
    with db.transaction():
        row = db.execute(
            f"INSERT INTO node (name, epoch, host, started_at, renewed_at, expires_at) "
            f"VALUES (%s, 1, %s, {NOW}, {NOW}, {NOW} + %s) ON CONFLICT (name) DO UPDATE SET "
            f"epoch = node.epoch + 1, host = excluded.host, started_at = excluded.started_at, "
            f"renewed_at = excluded.renewed_at, expires_at = excluded.expires_at RETURNING epoch",
            (name, host, lease_time),
        ).fetchone()
    assert row is not None
    return int(row[0])


NODES = f"SELECT name, epoch, host, started_at, renewed_at, expires_at, expires_at < {NOW}, {NOW} FROM node ORDER BY name"


def nodes(db: psycopg.Connection[Any]) -> list[NodeRow]:
    return [NodeRow(*row) for row in db.execute(NODES).fetchall()]


class NodeLease:
    def __init__(
        self,
        conninfo: str,
        name: str,
        epoch: int,
        *,
        interval: float = RENEW_INTERVAL,
        lease_time: float = LEASE_TIME,
    ) -> None:
        self.conninfo = conninfo
        self.name = name
        self.epoch = epoch
        self.interval = interval
        self.lease_time = lease_time
        self.renewals = 0
        self.lost = False  # another process took this node's name (a later epoch)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._db: psycopg.Connection[Any] | None = None
        self._failing = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="node-lease", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._db is not None:
            with contextlib.suppress(psycopg.Error):
                self._db.close()
            self._db = None

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._renew()
            except psycopg.Error as error:
                self._db = None
                if not self._failing:
                    self._failing = True
                    log.warning(
                        "node %s: cannot renew its lease on PostgreSQL %s (retrying every %.0f s): %s",
                        self.name,
                        redacted(self.conninfo),
                        self.interval,
                        str(error).strip(),
                    )

    def _renew(self) -> None:
        if self._db is None or self._db.closed:
            self._db = psycopg.connect(self.conninfo, autocommit=True)
        cursor = self._db.execute(
            f"UPDATE node SET renewed_at = {NOW}, expires_at = {NOW} + %s WHERE name = %s AND epoch = %s",
            (self.lease_time, self.name, self.epoch),
        )
        if cursor.rowcount == 0:
            if not self.lost:
                self.lost = True
                log.error(
                    "node %s (epoch %d): its lease was taken by a later start with the same <node_name>; "
                    "two nodes must not share a name",
                    self.name,
                    self.epoch,
                )
            return
        self.renewals += 1
        if self._failing:
            self._failing = False
            log.warning("node %s: lease renewed again", self.name)
