"""The SQLite schemas: Wazuh's global.db (v7) and per-agent DB (v16), plus agentpulse's own tables.

The Wazuh tables are kept column for column so that tooling written for wazuh-db reads our files
unchanged; agentpulse adds tables beside them and never alters theirs. Every statement is idempotent. The
danger is a reader that writes: `connect()` keeps read-only opens from creating `-wal`/`-shm` files.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path

from agentpulse.records import MANAGER_ID as MANAGER_ID

GLOBAL_DB_VERSION = 7
AGENT_DB_VERSION = 16
AGENTPULSE_SCHEMA_VERSION = 1

MANAGER_IP = "127.0.0.1"
MANAGER_LAST_KEEPALIVE = 253402300799  # 9999-12-31T23:59:59Z: the manager is never swept
BUSY_TIMEOUT_MS = 5000
# The group-members JOIN, written once: `b` is the membership row, `g` its group.
MEMBERSHIP = "belongs AS b JOIN `group` AS g ON g.id = b.id_group"

AGENT_COLUMNS: tuple[str, ...] = (
    "id",
    "name",
    "ip",
    "register_ip",
    "internal_key",
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
    "date_add",
    "last_keepalive",
    "group",
    "group_hash",
    "group_sync_status",
    "sync_status",
    "connection_status",
    "disconnection_time",
    "group_config_status",
    "status_code",
)

GLOBAL_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS agent (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    ip TEXT,
    register_ip TEXT,
    internal_key TEXT,
    os_name TEXT,
    os_version TEXT,
    os_major TEXT,
    os_minor TEXT,
    os_codename TEXT,
    os_build TEXT,
    os_platform TEXT,
    os_uname TEXT,
    os_arch TEXT,
    version TEXT,
    config_sum TEXT,
    merged_sum TEXT,
    manager_host TEXT,
    node_name TEXT DEFAULT 'unknown',
    date_add INTEGER NOT NULL,
    last_keepalive INTEGER,
    `group` TEXT DEFAULT 'default',
    group_hash TEXT DEFAULT NULL,
    group_sync_status TEXT NOT NULL CHECK (group_sync_status IN ('synced', 'syncreq')) DEFAULT 'synced',
    sync_status TEXT NOT NULL
        CHECK (sync_status IN ('synced', 'syncreq', 'syncreq_status', 'syncreq_keepalive')) DEFAULT 'synced',
    connection_status TEXT NOT NULL
        CHECK (connection_status IN ('pending', 'never_connected', 'active', 'disconnected'))
        DEFAULT 'never_connected',
    disconnection_time INTEGER DEFAULT 0,
    group_config_status TEXT NOT NULL
        CHECK (group_config_status IN ('synced', 'not synced')) DEFAULT 'not synced',
    status_code INTEGER DEFAULT 0
);
CREATE INDEX IF NOT EXISTS agent_name ON agent (name);
CREATE INDEX IF NOT EXISTS agent_ip ON agent (ip);
CREATE INDEX IF NOT EXISTS agent_group_hash ON agent (group_hash);

CREATE TABLE IF NOT EXISTS labels (
    id INTEGER REFERENCES agent (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (id, key)
);

CREATE TABLE IF NOT EXISTS info (
    key TEXT PRIMARY KEY,
    value TEXT
);

CREATE TABLE IF NOT EXISTS `group` (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT,
    UNIQUE (name)
);
CREATE INDEX IF NOT EXISTS group_name ON `group` (name);

CREATE TABLE IF NOT EXISTS belongs (
    id_agent INTEGER REFERENCES agent (id) ON DELETE CASCADE,
    id_group INTEGER REFERENCES `group` (id) ON DELETE CASCADE,
    priority INTEGER NOT NULL DEFAULT 0,
    UNIQUE (id_agent, priority),
    PRIMARY KEY (id_agent, id_group)
);
CREATE INDEX IF NOT EXISTS belongs_id_agent ON belongs (id_agent);
CREATE INDEX IF NOT EXISTS belongs_id_group ON belongs (id_group);

CREATE TABLE IF NOT EXISTS metadata (
    key TEXT PRIMARY KEY,
    value TEXT
);
INSERT OR IGNORE INTO metadata (key, value) VALUES ('db_version', '{GLOBAL_DB_VERSION}');

-- agentpulse tables. No foreign key to agent: history must outlive a deleted agent.
CREATE TABLE IF NOT EXISTS agent_status_history (
    agent_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    from_status TEXT NOT NULL,
    to_status TEXT NOT NULL,
    status_code INTEGER NOT NULL,
    at REAL NOT NULL,
    alerted INTEGER NOT NULL DEFAULT 0,
    reason TEXT,  -- NULL: the status code says why; set for a disconnection while the manager was overloaded
    PRIMARY KEY (agent_id, seq)
);
CREATE INDEX IF NOT EXISTS agent_status_history_at ON agent_status_history (at);

CREATE TABLE IF NOT EXISTS event_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    subject TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL
);

-- getstate answers and counters: written often, so kept out of the agent table Wazuh tools read.
CREATE TABLE IF NOT EXISTS agent_runtime (
    agent_id INTEGER PRIMARY KEY,
    events_received INTEGER NOT NULL DEFAULT 0,
    state_json TEXT,
    state_at REAL,
    status_seq INTEGER NOT NULL DEFAULT 0
);

INSERT OR IGNORE INTO metadata (key, value) VALUES ('agentpulse_schema', '{AGENTPULSE_SCHEMA_VERSION}');
"""

SCAN_MODULES: tuple[str, ...] = ("fim", "syscollector")
SYNC_COMPONENTS: tuple[str, ...] = (
    "fim",
    "fim_file",
    "fim_registry",
    "fim_registry_key",
    "fim_registry_value",
    "syscollector-processes",
    "syscollector-packages",
    "syscollector-hotfixes",
    "syscollector-ports",
    "syscollector-netproto",
    "syscollector-netaddress",
    "syscollector-netinfo",
    "syscollector-hwinfo",
    "syscollector-osinfo",
    "syscollector-users",
    "syscollector-groups",
    "syscollector-browser-extensions",
    "syscollector-services",
)


def _values(names: tuple[str, ...]) -> str:
    return ", ".join(f"('{name}')" for name in names)


AGENT_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS metadata (
    key TEXT PRIMARY KEY,
    value TEXT
);
INSERT OR IGNORE INTO metadata (key, value) VALUES ('db_version', '{AGENT_DB_VERSION}');

CREATE TABLE IF NOT EXISTS scan_info (
    module TEXT PRIMARY KEY,
    first_start INTEGER DEFAULT 0,
    first_end INTEGER DEFAULT 0,
    start_scan INTEGER DEFAULT 0,
    end_scan INTEGER DEFAULT 0,
    fim_first_check INTEGER DEFAULT 0,
    fim_second_check INTEGER DEFAULT 0,
    fim_third_check INTEGER DEFAULT 0
);
INSERT OR IGNORE INTO scan_info (module) VALUES {_values(SCAN_MODULES)};

CREATE TABLE IF NOT EXISTS sync_info (
    component TEXT PRIMARY KEY,
    last_attempt INTEGER DEFAULT 0,
    last_completion INTEGER DEFAULT 0,
    n_attempts INTEGER DEFAULT 0,
    n_completions INTEGER DEFAULT 0,
    last_manager_checksum TEXT NOT NULL DEFAULT '',
    last_agent_checksum TEXT NOT NULL DEFAULT ''
);
INSERT OR IGNORE INTO sync_info (component) VALUES {_values(SYNC_COMPONENTS)};
"""

_WAL_HEADER_OFFSET = 18  # bytes 18-19 of the database header are 2 when the file is in WAL mode


def _is_idle_wal_database(path: Path) -> bool:
    """True when `path` is a WAL database that no connection has open (so it has no `-wal` file)."""
    if Path(f"{path}-wal").exists():
        return False
    try:
        with path.open("rb") as handle:
            header = handle.read(_WAL_HEADER_OFFSET + 2)
    except OSError:
        return False
    return header[_WAL_HEADER_OFFSET : _WAL_HEADER_OFFSET + 2] == b"\x02\x02"


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open a database. Readers never write, not even the `-wal`/`-shm` files of an idle database.

    A read-only SQLite connection to a WAL database creates the `-wal` and `-shm` files when they are
    missing and cannot remove them afterwards. Run by another user (root running `agent_control`) those
    files would then belong to the wrong owner and the manager could no longer write.
    A read-only open of an idle WAL database uses `immutable=1`: nothing is in a WAL to read, and SQLite then
    creates no side files. A manager starting during that one read is the accepted (tiny) risk.
    """
    if readonly:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        if _is_idle_wal_database(Path(path)):
            uri += "&immutable=1"
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
    else:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA foreign_keys=ON")
    if not readonly:
        # WAL makes NORMAL durable against corruption; a power cut loses at most the last commits.
        conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _create(path: Path, schema: str) -> bool:
    """Apply `schema` in one transaction; True if the database had no schema before.

    Every statement is idempotent (`IF NOT EXISTS`, `INSERT OR IGNORE`), so creating a database that
    already exists is harmless.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(connect(path)) as conn:
        conn.isolation_level = None  # the script below manages its own transaction
        # journal_mode cannot change inside a transaction, and it persists in the file.
        conn.execute("PRAGMA journal_mode=WAL")
        existed = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'metadata'")
        created = existed.fetchone() is None
        conn.executescript(f"BEGIN IMMEDIATE;\n{schema}\nCOMMIT;")
    return created


def create_global_db(path: Path, manager_name: str, now: int) -> None:
    """Create `global.db` (or complete it) and insert the manager's row, id 0, if it is absent."""
    _create(path, GLOBAL_SCHEMA)
    with closing(connect(path)) as conn, conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(agent_status_history)")}
        if "reason" not in columns:  # a global.db from before the column (issue 19)
            conn.execute("ALTER TABLE agent_status_history ADD COLUMN reason TEXT")
        conn.execute(
            "INSERT OR IGNORE INTO agent (id, name, ip, register_ip, date_add, last_keepalive, `group`,"
            " connection_status) VALUES (?, ?, ?, ?, ?, ?, NULL, 'active')",
            (MANAGER_ID, manager_name, MANAGER_IP, MANAGER_IP, now, MANAGER_LAST_KEEPALIVE),
        )


def create_agent_db(path: Path, template: bytes | None = None) -> bool:
    """Create a per-agent database (`queue/db/<%03d id>.db`); True if it had to create the schema.

    With `template` (the bytes of an empty per-agent database made once by `create_agent_db`), a new file
    is a copy of it written with a handful of system calls: some 45 us instead of 2 ms of SQLite work,
    which is what lets thousands of agents make their first startup in the same second.
    """
    if template is not None and not path.exists():
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            with memoryview(template) as rest:
                while rest:
                    rest = rest[os.write(fd, rest) :]
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # never replaces a database that appeared meanwhile
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
        return True
    return _create(path, AGENT_SCHEMA)
