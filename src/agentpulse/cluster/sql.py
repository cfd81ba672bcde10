"""Every SQL statement of the cluster primitives: the `cluster_node` lease table and the leader's advisory
lock. PostgreSQL only; all times are the database's `clock_timestamp()`, never a node's clock.

The danger is the lock key: every node of one cluster must use the same one, and nothing else in the
database may (it is derived once here from a fixed name).
"""

from __future__ import annotations

import hashlib
from typing import Final


def lock_key(name: str) -> int:
    """A signed 64-bit advisory lock key from a name (the first 8 bytes of its SHA-256)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


SWEEPER_LOCK: Final = lock_key("agentpulse:sweeper")  # the leader: claims, upkeep, the outbox relay
SCHEMA_LOCK: Final = lock_key("agentpulse:cluster-schema")  # held while a node creates cluster_node

# A peer gone without a FIN (power loss) is dropped by the server after ~1 + 1 * 2 s of silence, which
# frees its advisory lock; the same on the client side through tcp_user_timeout.
SESSION_SETTINGS: Final = (
    "SET tcp_keepalives_idle = 1; SET tcp_keepalives_interval = 1; SET tcp_keepalives_count = 2; "
    "SET tcp_user_timeout = 3000; SET statement_timeout = 2000"
)

# The same on the client side (libpq connection parameters): a server gone silent fails our query in ~3 s.
CLIENT_KEEPALIVES: Final = {
    "keepalives": 1,
    "keepalives_idle": 1,
    "keepalives_interval": 1,
    "keepalives_count": 2,
    "tcp_user_timeout": 3000,
}

CREATE_CLUSTER_NODE: Final = """
CREATE TABLE IF NOT EXISTS cluster_node (
    name TEXT PRIMARY KEY,
    host TEXT NOT NULL DEFAULT '',
    epoch BIGINT NOT NULL,
    started TIMESTAMPTZ NOT NULL,
    renewed TIMESTAMPTZ NOT NULL,
    expires TIMESTAMPTZ NOT NULL,
    claimed_epoch BIGINT NOT NULL DEFAULT 0
)
"""

# A new epoch on every start: the previous process of this name (if any) loses its renewals.
REGISTER_NODE: Final = """
INSERT INTO cluster_node AS node (name, host, epoch, started, renewed, expires)
VALUES (%s, %s, 1, clock_timestamp(), clock_timestamp(), clock_timestamp() + make_interval(secs => %s))
ON CONFLICT (name) DO UPDATE SET
    host = EXCLUDED.host, epoch = node.epoch + 1, started = EXCLUDED.started,
    renewed = EXCLUDED.renewed, expires = EXCLUDED.expires
RETURNING epoch
"""

# Only the epoch that registered, and only while no survivor has claimed it.
RENEW_NODE: Final = """
UPDATE cluster_node
SET renewed = clock_timestamp(), expires = clock_timestamp() + make_interval(secs => %s)
WHERE name = %s AND epoch = %s AND claimed_epoch < epoch
RETURNING epoch
"""

# A clean stop: expired at once, so a survivor closes what is still bound to it after the grace, without
# waiting for the ttl.
RELEASE_NODE: Final = """
UPDATE cluster_node SET expires = clock_timestamp() WHERE name = %s AND epoch = %s
"""

READ_NODES: Final = """
SELECT name, host, epoch, started, renewed, expires, expires < clock_timestamp(), claimed_epoch >= epoch
FROM cluster_node ORDER BY name
"""

CLAIM_EXPIRED: Final = """
UPDATE cluster_node SET claimed_epoch = epoch
WHERE claimed_epoch < epoch AND expires + make_interval(secs => %s) < clock_timestamp()
RETURNING name, epoch, EXTRACT(EPOCH FROM clock_timestamp() - expires)
"""

# The same, one lease at a time (the oldest expiry first) and never the claimer's own: a lease another
# claimer holds locked is skipped, so each epoch still goes to exactly one survivor.
CLAIM_ONE_EXPIRED: Final = """
UPDATE cluster_node SET claimed_epoch = epoch
WHERE name = (
    SELECT name FROM cluster_node
    WHERE claimed_epoch < epoch AND expires + make_interval(secs => %s) < clock_timestamp() AND name <> %s
    ORDER BY expires, name LIMIT 1 FOR UPDATE SKIP LOCKED
) AND claimed_epoch < epoch
RETURNING name, epoch, EXTRACT(EPOCH FROM clock_timestamp() - expires)
"""

TRY_LOCK: Final = "SELECT pg_try_advisory_lock(%s)"
UNLOCK: Final = "SELECT pg_advisory_unlock(%s)"
PING: Final = "SELECT 1"

# Who holds the lock now: the session's application_name is agentpulse:<node>:leader. Advisory locks
# are per database, pg_locks shows every database's: another cluster on the same server is not ours.
LOCK_HOLDER: Final = """
SELECT a.application_name, a.pid, a.backend_start
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = ((%s::bigint >> 32) & 4294967295)::oid AND l.objid = (%s::bigint & 4294967295)::oid
"""
