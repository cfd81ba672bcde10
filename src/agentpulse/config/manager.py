"""The manager's `ossec.conf` sections as frozen dataclasses: `<remote>` (with `<manager_keepalive>`),
`<global>` (and `<cluster><node_name>`), `<nats>`, `<database>` and `<auth>` (`config/auth.py`); README.md
lists the options.

Every error is one `ConfigError` naming the file, the line, the element path and the value, and nothing is
ever partially configured: the first error raises. Sections the manager does not use (`<syscheck>`,
`<wodle>`, `<ruleset>`, the agent's `<client>`, ...) are skipped so a real Wazuh manager's file loads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from typing import Final

from agentpulse.config import convert as cv
from agentpulse.config.agent_events import AgentEventsConfig, read_agent_events
from agentpulse.config.api import ApiConfig, read_api
from agentpulse.config.auth import AuthConfig, read_auth
from agentpulse.config.metrics import MetricsConfig, read_metrics
from agentpulse.config.sections import (
    Fields,
    SectionReader,
    Sections,
    Values,
    parse_sections,
    read_config_text,
)
from agentpulse.config.xmltree import Node, show

__all__ = [
    "DEFAULT_CONFIG_TEXT",
    "Config",
    "DatabaseConfig",
    "GlobalConfig",
    "ManagerKeepalive",
    "NatsConfig",
    "RemoteConfig",
    "build_config",
    "default_config_text",
    "load_config",
    "parse_config",
]


@dataclass(frozen=True, slots=True)
class ManagerKeepalive:
    """`<remote><manager_keepalive>`: probe an agent silent for `interval`, drop it after `timeout`."""

    enabled: bool = True
    interval: float = 60.0
    timeout: float = 180.0


@dataclass(frozen=True, slots=True)
class RemoteConfig:
    """The secure `<remote>` block (Wazuh's defaults, plus agentpulse's own options)."""

    connection: str = "secure"
    port: int = 1514
    protocols: tuple[str, ...] = ("tcp",)
    queue_size: int = 131072
    local_ip: str | None = None
    ipv6: bool = False
    rids_closing_time: float = 300.0
    connection_overtake_time: float = 60.0
    allow_higher_versions: bool = False
    connection_grace: float = 10.0
    verify_msg_id: bool = False
    keyupdate_interval: float = 10.0
    # A client.keys reload that removes more agents than either limit is refused (`keys reload --force`).
    keys_reload_max_removed: int = 100
    keys_reload_max_removed_percent: float = 10.0
    workers: int = 0  # remoted processes; 0 ("auto") means one per core, 1 keeps remoted in the manager
    worker_nice: int = 5  # the worker processes' niceness (0-19), so that the manager process comes first
    manager_keepalive: ManagerKeepalive = ManagerKeepalive()
    # Before authentication (docs/security.md); each limit holds per remoted process.
    frame_timeout: float = 10.0  # to authenticate after connecting, and to finish any frame begun
    max_unauthenticated_per_ip: int = 64  # unauthenticated for over 1 s; more from that address are refused
    max_unauthenticated: int = 4096  # past it, the oldest unauthenticated one is closed (one listen backlog)
    max_connections: int = 0  # 0 ("auto"): the open-file limit less a tenth (database, pipes, logs)
    max_unauthenticated_frame: int = 16384  # bytes a frame may announce before authentication
    shared_reload: float = 10.0  # remoted.shared_reload: seconds between scans of etc/shared (1-18000)
    max_concurrent_pushes: int = 64  # merged.mg pushes in flight at once, for the whole manager
    shared_push: bool = True  # no: compare and record group_config_status, never push

    @property
    def worker_processes(self) -> int:
        return self.workers or os.cpu_count() or 1


@dataclass(frozen=True, slots=True)
class GlobalConfig:
    """`<global>`: the disconnection sweeper's timeout, and who this manager is."""

    agents_disconnection_time: float = 900.0
    agents_disconnection_alert_time: float = 0.0
    node_name: str = "node01"
    manager_host: str | None = None
    # <cluster><lease_ttl>: with several nodes, how long a node's lease outlives its last renewal before the
    # others may take its agents over (renewed every third of it, at most every second; cluster/lease.py)
    lease_ttl: float = 3.0


@dataclass(frozen=True, slots=True)
class NatsConfig:
    """`<nats>`: where events go. No URL means the embedded nats-server."""

    enabled: bool = False
    urls: tuple[str, ...] = ()
    subject_prefix: str = "agent"
    stream: str = "AGENT_STATUS"
    kv_bucket: str = "agent_status"
    user: str | None = None
    password: str | None = None
    token: str | None = None
    creds_file: str | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    keepalive_events: bool = True
    start_without_nats: bool = True
    replicas: int = 1  # of the streams and KV bucket agentpulse creates: 3 on a 3-server NATS cluster
    agent_events: AgentEventsConfig = field(
        default_factory=AgentEventsConfig
    )  # <agent_events> (config/agent_events.py)


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """`<database>`: the store's backend, its maintenance knobs and its query socket's limits."""

    backend: str = "sqlite"
    path: str | None = None
    allow_sql: str = "no"
    max_fragmentation: float = 90.0
    fragmentation_check_interval: float = 7200.0
    purge_removed: bool = True
    flush_interval: float = 1.0
    # queue/db/wdb (wdb.server's defaults): clients at once, and how long one may wait between requests.
    wdb_max_clients: int = 64
    wdb_idle_timeout: float = 5.0
    # PostgreSQL (backend postgresql): a libpq DSN and/or its parts; the password may come from a file (or
    # PGPASSWORD, which libpq reads itself). See store/postgresql/connect.py and docs/cluster.md.
    dsn: str | None = None
    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = None
    password_file: str | None = None
    dbname: str | None = None
    # status changes (history and outbox rows) held in memory while the database cannot be written
    max_pending: int = 1_000_000


@dataclass(frozen=True, slots=True)
class Config:
    """The manager's whole configuration."""

    remote: RemoteConfig = RemoteConfig()
    global_: GlobalConfig = GlobalConfig()
    nats: NatsConfig = NatsConfig()
    database: DatabaseConfig = DatabaseConfig()
    auth: AuthConfig | None = None  # None: no <auth> element, so no enrolment port (see config/auth.py)
    # the standalone Prometheus listener (config/metrics.py)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    api: ApiConfig | None = None  # None: no <api> element, so no HTTP API (see config/api.py)


def parse_config(text: str, source: str = "ossec.conf") -> Config:
    """Parse and validate the text of an `ossec.conf`; `source` names it in error messages."""
    return build_config(parse_sections(text, source), source)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and parse an `ossec.conf` file; a missing or unreadable file is a `ConfigError` too."""
    text, source = read_config_text(path)
    return parse_config(text, source)


def build_config(sections: Sections, source: str) -> Config:
    """The manager's configuration from the file's sections (see `sections.parse_sections`)."""
    return _ManagerReader(source).build(sections)


def default_config_text() -> str:
    """The commented manager configuration `agentpulse init` writes (`default_ossec.conf`)."""
    return resources.files("agentpulse").joinpath("default_ossec.conf").read_text(encoding="utf-8")


DEFAULT_CONFIG_TEXT: Final[str] = default_config_text()


# --------------------------------------------------------------------------------------------------------
# Which element sets which field, and how it is checked

_REMOTE_FIELDS: Final[Fields] = {
    "port": ("port", cv.integer(1, 65535)),
    "protocol": ("protocols", cv.protocols),
    "queue_size": ("queue_size", cv.integer(1)),
    "local_ip": ("local_ip", cv.ip_address),
    "ipv6": ("ipv6", cv.boolean),
    "rids_closing_time": ("rids_closing_time", cv.time(0, above=True)),
    "connection_overtake_time": ("connection_overtake_time", cv.time(0, 3600)),
    "connection_grace": ("connection_grace", cv.time(0, 3600)),
    "verify_msg_id": ("verify_msg_id", cv.boolean),
    "keyupdate_interval": ("keyupdate_interval", cv.time(0, above=True)),
    "keys_reload_max_removed": ("keys_reload_max_removed", cv.integer(0)),
    "keys_reload_max_removed_percent": ("keys_reload_max_removed_percent", cv.number(0, 100)),
    "workers": ("workers", cv.workers),
    "worker_nice": ("worker_nice", cv.integer(0, 19)),
    "frame_timeout": ("frame_timeout", cv.time(0.1, 3600)),
    "max_unauthenticated_per_ip": ("max_unauthenticated_per_ip", cv.integer(1)),
    "max_unauthenticated": ("max_unauthenticated", cv.integer(1)),
    "max_connections": ("max_connections", cv.auto_or_integer(1)),
    "max_unauthenticated_frame": ("max_unauthenticated_frame", cv.integer(256, 65536)),  # 65536: OS_MAXSTR
    "shared_reload": ("shared_reload", cv.time(1, 18000)),
    "max_concurrent_pushes": ("max_concurrent_pushes", cv.integer(1, 100000)),
    "shared_push": ("shared_push", cv.boolean),
}
# Wazuh options of <remote> that only matter to syslog connections.
_REMOTE_IGNORED: Final = frozenset({"connection", "allowed-ips", "denied-ips"})

_AGENTS_FIELDS: Final[Fields] = {"allow_higher_versions": ("allow_higher_versions", cv.boolean)}

_KEEPALIVE_FIELDS: Final[Fields] = {
    "enabled": ("enabled", cv.boolean),
    "interval": ("interval", cv.time(0, above=True)),
    "timeout": ("timeout", cv.time(0, above=True)),
}

# A lease renewed every second must survive a missed renewal or two; past a minute a dead node's agents
# would wait too long for a survivor.
_LEASE_TTL: Final = cv.time(2, 60)

_GLOBAL_FIELDS: Final[Fields] = {
    "agents_disconnection_time": ("agents_disconnection_time", cv.time(1)),
    "agents_disconnection_alert_time": ("agents_disconnection_alert_time", cv.time(0)),
    "node_name": ("node_name", cv.node_name),
    "manager_host": ("manager_host", cv.host),
}
# Wazuh's other <global> options (analysisd, maild, ...): allowed so a Wazuh file loads, never read.
_WAZUH_GLOBAL_OPTIONS: Final = frozenset(
    {
        "alerts_log",
        "compress_alerts",
        "cti-url",
        "custom_alert_output",
        "email_from",
        "email_idsname",
        "email_log_source",
        "email_maxperhour",
        "email_notification",
        "email_reply_to",
        "email_to",
        "forward_to",
        "geoip_db_path",
        "geoipdb",
        "helo_server",
        "host_information",
        "integrity_checking",
        "jsonout_output",
        "limits",
        "logall",
        "logall_json",
        "max_output_size",
        "memory_size",
        "picviz_output",
        "picviz_socket",
        "prelude_log_level",
        "prelude_output",
        "prelude_profile",
        "queue_size",
        "rootkit_detection",
        "rotate_interval",
        "smtp_server",
        "stats",
        "update_check",
        "white_list",
        "zeromq_client_cert",
        "zeromq_output",
        "zeromq_server_cert",
        "zeromq_uri",
    }
)

_NATS_FIELDS: Final[Fields] = {
    "enabled": ("enabled", cv.boolean),
    "subject_prefix": ("subject_prefix", cv.subject_prefix),
    "stream": ("stream", cv.nats_name),
    "kv_bucket": ("kv_bucket", cv.nats_name),
    "user": ("user", cv.nonempty),
    "password": ("password", cv.nonempty),
    "token": ("token", cv.nonempty),
    "creds_file": ("creds_file", cv.nonempty),
    "tls_ca": ("tls_ca", cv.nonempty),
    "tls_cert": ("tls_cert", cv.nonempty),
    "tls_key": ("tls_key", cv.nonempty),
    "keepalive_events": ("keepalive_events", cv.keepalive_events),
    "start_without_nats": ("start_without_nats", cv.boolean),
    "replicas": ("replicas", cv.integer(1, 5)),  # JetStream allows at most 5
}

_DATABASE_FIELDS: Final[Fields] = {
    "backend": ("backend", cv.backend),
    "path": ("path", cv.nonempty),
    "dsn": ("dsn", cv.postgres_dsn),
    "host": ("host", cv.nonempty),
    "port": ("port", cv.integer(1, 65535)),
    "user": ("user", cv.nonempty),
    "password": ("password", cv.nonempty),
    "password_file": ("password_file", cv.nonempty),
    "dbname": ("dbname", cv.nonempty),
    "max_pending": ("max_pending", cv.integer(1000)),
    "allow_sql": ("allow_sql", cv.choice("no", "read-only")),
    "max_fragmentation": ("max_fragmentation", cv.number(0, 100)),
    "fragmentation_check_interval": ("fragmentation_check_interval", cv.time(1)),
    "purge_removed": ("purge_removed", cv.boolean),
    "flush_interval": ("flush_interval", cv.time(0.05, 10)),
    "wdb_max_clients": ("wdb_max_clients", cv.integer(1, 4096)),
    "wdb_idle_timeout": ("wdb_idle_timeout", cv.time(0.5, 3600)),
}


class _ManagerReader(SectionReader):
    def build(self, sections: Sections) -> Config:
        return Config(
            remote=self.remote(sections.get("remote", [])),
            global_=self.global_(sections.get("global", []), sections.get("cluster", [])),
            nats=self.nats(sections.get("nats", [])),
            database=self.database(sections.get("database", [])),
            auth=read_auth(sections.get("auth", []), self.source),
            metrics=read_metrics(sections.get("metrics", []), self.source),
            api=read_api(sections.get("api", []), self.source),
        )

    # -- <remote> -----------------------------------------------------------------------------------------

    def secure_remote(self, nodes: list[Node]) -> Node | None:
        """The one `<remote>` block with a secure connection (syslog ones are not agentpulse's business)."""
        secure: Node | None = None
        for node in nodes:
            connections = [child for child in node.children if child.tag == "connection"]
            if not connections:
                raise self.error(node, "<remote>", "missing <connection> (secure or syslog)")
            connection = self.value(connections[-1], "<remote><connection>", cv.choice("secure", "syslog"))
            if connection != "secure":
                continue
            if secure is not None:
                raise self.error(
                    node, "<remote>", f"a second secure <remote> block (the first is at line {secure.line})"
                )
            secure = node
        return secure

    def remote(self, nodes: list[Node]) -> RemoteConfig:
        secure = self.secure_remote(nodes)
        if secure is None:
            return RemoteConfig()

        values = Values()
        keepalive = Values()

        def agents(node: Node, path: str) -> None:
            self.read(node, path, _AGENTS_FIELDS, values)

        def manager_keepalive(node: Node, path: str) -> None:
            self.read(node, path, _KEEPALIVE_FIELDS, keepalive)

        self.read(
            secure,
            "<remote>",
            _REMOTE_FIELDS,
            values,
            nested={"agents": agents, "manager_keepalive": manager_keepalive},
            ignored=_REMOTE_IGNORED,
        )
        settings = ManagerKeepalive(**keepalive.kwargs)
        if settings.timeout <= settings.interval:
            # The defaults are consistent, so at least one of the two was set.
            name = "timeout" if "timeout" in keepalive.origin else "interval"
            node, path = keepalive.origin[name]
            rule = (
                f"must be greater than <interval> ({settings.interval:g} s)"
                if name == "timeout"
                else f"must be less than <timeout> ({settings.timeout:g} s)"
            )
            raise self.error(node, path, f"invalid value {show(node.text)}: {rule}")
        return RemoteConfig(**values.kwargs, manager_keepalive=settings)

    # -- <global> (and <cluster><node_name>, where Wazuh keeps the node name) -----------------------------

    def global_(self, nodes: list[Node], clusters: list[Node]) -> GlobalConfig:
        values = Values()
        for cluster in clusters:
            for child in cluster.children:
                if child.tag == "node_name":
                    values.kwargs["node_name"] = self.value(child, "<cluster><node_name>", cv.node_name)
                elif child.tag == "lease_ttl":
                    values.kwargs["lease_ttl"] = self.value(child, "<cluster><lease_ttl>", _LEASE_TTL)
        for node in nodes:
            self.read(node, "<global>", _GLOBAL_FIELDS, values, ignored=_WAZUH_GLOBAL_OPTIONS)
        return GlobalConfig(**values.kwargs)

    # -- <nats> -------------------------------------------------------------------------------------------

    def nats(self, nodes: list[Node]) -> NatsConfig:
        values = Values()
        urls: list[str] = []
        agent_events: list[Node] = []

        def url(node: Node, path: str) -> None:
            urls.extend(self.value(node, path, cv.nats_urls))

        for node in nodes:
            self.read(
                node,
                "<nats>",
                _NATS_FIELDS,
                values,
                nested={"url": url, "agent_events": lambda n, _: agent_events.append(n)},
            )
        kwargs = values.kwargs
        pairs = (("user", "password"), ("password", "user"), ("tls_cert", "tls_key"), ("tls_key", "tls_cert"))
        for present, missing in pairs:
            if present in kwargs and missing not in kwargs:
                node, path = values.origin[present]
                raise self.error(node, path, f"set without <nats><{missing}>")
        return NatsConfig(**kwargs, urls=tuple(urls), agent_events=read_agent_events(self, agent_events))

    # -- <database> ---------------------------------------------------------------------------------------

    def database(self, nodes: list[Node]) -> DatabaseConfig:
        values = Values()
        for node in nodes:
            self.read(node, "<database>", _DATABASE_FIELDS, values)
        kwargs = values.kwargs
        postgres = ("dsn", "host", "port", "user", "password", "password_file", "dbname")
        if kwargs.get("backend", "sqlite") == "postgresql":
            if "dsn" not in kwargs and "host" not in kwargs and "dbname" not in kwargs:
                raise self.error(nodes[-1], "<database>", "backend postgresql needs <dsn> or <host>/<dbname>")
        elif any(name in kwargs for name in postgres):
            name = next(name for name in postgres if name in kwargs)
            node, path = values.origin[name]
            raise self.error(node, path, "set without <database><backend>postgresql</backend>")
        return DatabaseConfig(**kwargs)
