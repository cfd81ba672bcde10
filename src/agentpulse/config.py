"""`ossec.conf` parsed once into frozen dataclasses (design section 2, protocol reference section 10).

The plan: Wazuh files may hold several top-level `<ossec_config>` elements, which is not one XML document,
so the text is wrapped in a synthetic root opened on the first line (line numbers stay the file's) and parsed
by defusedxml's expat parser into a tiny tree that remembers each element's line. The danger is the file
itself: DTDs are refused, so no entity-expansion ("billion laughs") or external-entity attack gets through.

Every error is one `ConfigError` naming the file, the line, the element path and the value, and nothing is
ever partially configured: the first error raises. Sections agentpulse does not use (`<syscheck>`,
`<wodle>`, `<ruleset>`, ...) are skipped so a real Wazuh manager's file loads, while inside the sections we
read, an element nobody knows is an error: a typo must not silently leave a default in place.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit
from xml.etree.ElementTree import ParseError
from xml.parsers import expat

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

__all__ = [
    "DEFAULT_CONFIG_TEXT",
    "ClientConfig",
    "Config",
    "ConfigError",
    "DatabaseConfig",
    "GlobalConfig",
    "ManagerKeepalive",
    "NatsConfig",
    "RemoteConfig",
    "ServerAddress",
    "default_config_text",
    "load_config",
    "parse_config",
    "parse_time",
]


class ConfigError(Exception):
    """A configuration agentpulse refuses. The message names the file, line, element path and value."""

    def __init__(self, message: str, *, line: int | None = None, element: str | None = None) -> None:
        super().__init__(message)
        self.line = line
        self.element = element


# --------------------------------------------------------------------------------------------------------
# The configuration


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
    workers: int = 0  # remoted processes; 0 ("auto") means one per core, 1 keeps remoted in the manager
    manager_keepalive: ManagerKeepalive = ManagerKeepalive()

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


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    """`<database>`: the store's backend and its maintenance knobs."""

    backend: str = "sqlite"
    path: str | None = None
    allow_sql: str = "no"
    max_fragmentation: float = 90.0
    fragmentation_check_interval: float = 7200.0
    purge_removed: bool = True
    flush_interval: float = 1.0


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """One agent-side `<client><server>`."""

    address: str
    port: int = 1514
    protocol: str = "tcp"
    max_retries: int = 5
    retry_interval: float = 10.0


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """The agent side: `<client>` plus the top-level `<labels>` (key, value, hidden, system)."""

    servers: tuple[ServerAddress, ...]
    notify_time: float = 20.0
    time_reconnect: float = 60.0
    crypto_method: str = "aes"
    labels: tuple[tuple[str, str, bool, bool], ...] = ()
    state_interval: float = 5.0


@dataclass(frozen=True, slots=True)
class Config:
    remote: RemoteConfig = RemoteConfig()
    global_: GlobalConfig = GlobalConfig()
    nats: NatsConfig = NatsConfig()
    database: DatabaseConfig = DatabaseConfig()
    client: ClientConfig | None = None


# --------------------------------------------------------------------------------------------------------
# Public functions

_TIME_RE: Final = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw]?)")
_TIME_UNITS: Final = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_TIME_HINT: Final = "seconds, or a number followed by s, m, h, d or w"

# Wazuh's own client defaults (NOTIFY_TIME since v4.13, RECONNECT_TIME).
_NOTIFY_TIME: Final = 20.0
_RECONNECT_TIME: Final = 60.0


def parse_time(text: str) -> float:
    """Seconds from a Wazuh time value: `30`, `30s`, `15m`, `2h`, `1d`, `1w` (decimals allowed)."""
    match = _TIME_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid time {text[:40]!r}: expected {_TIME_HINT}")
    seconds = float(match.group(1)) * _TIME_UNITS[match.group(2)]
    if not math.isfinite(seconds):
        raise ValueError(f"invalid time {text[:40]!r}: too large")
    return seconds


def parse_config(text: str, source: str = "ossec.conf") -> Config:
    """Parse and validate the text of an `ossec.conf`; `source` names it in error messages."""
    return _Builder(source).build(_parse_xml(text, source))


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and parse an `ossec.conf` file; a missing or unreadable file is a `ConfigError` too."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        raise ConfigError(f"{source}: file not found") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{source} line {line}: the file is not valid UTF-8", line=line) from None
    return parse_config(text, source)


def default_config_text() -> str:
    """The commented manager configuration `agentpulse init` writes (`default_ossec.conf`)."""
    return resources.files("agentpulse").joinpath("default_ossec.conf").read_text(encoding="utf-8")


DEFAULT_CONFIG_TEXT: Final[str] = default_config_text()


# --------------------------------------------------------------------------------------------------------
# XML to a tree of nodes that know their line

_ROOT: Final = "agentpulse-synthetic-root"
_XML_DECLARATION: Final = re.compile(r"\A[ \t\r\n]*<\?xml[^>]*\?>")
_NEWLINE: Final = re.compile(r"\r\n|\r|\n")
_TAG_MISMATCH: Final = expat.errors.codes[expat.errors.XML_ERROR_TAG_MISMATCH]


@dataclass(slots=True, eq=False)
class _Node:
    tag: str
    attrs: dict[str, str]
    line: int
    children: list[_Node] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.parts).strip()


class _TreeBuilder:
    """The parser's target: builds `_Node`s, taking each start tag's line from the expat parser."""

    def __init__(self) -> None:
        self.expat: Any = None
        self.stack: list[_Node] = []
        self.root: _Node | None = None
        self.stray_text: tuple[int, str] | None = None

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        node = _Node(tag, dict(attrs), int(self.expat.CurrentLineNumber))
        if self.stack:
            self.stack[-1].children.append(node)
        else:
            self.root = node
        self.stack.append(node)

    def end(self, tag: str) -> None:
        self.stack.pop()

    def data(self, text: str) -> None:
        if not self.stack:
            return
        self.stack[-1].parts.append(text)
        stripped = text.lstrip()
        if len(self.stack) == 1 and stripped and self.stray_text is None:
            line = int(self.expat.CurrentLineNumber) + text[: len(text) - len(stripped)].count("\n")
            self.stray_text = (line, stripped.strip())

    def close(self) -> _Node | None:
        return self.root


def _blank(text: str) -> str:
    """The same text with everything but line breaks turned into spaces, so lines keep their numbers."""
    return re.sub(r"[^\r\n]", " ", text)


def _parse_xml(text: str, source: str) -> _Node:
    if text.startswith("\ufeff"):
        text = " " + text[1:]
    # An XML declaration is only allowed at the very start of a document, which is now our root's.
    declaration = _XML_DECLARATION.match(text)
    if declaration is not None:
        text = _blank(declaration.group()) + text[declaration.end() :]
    wrapped = f"<{_ROOT}>{text}</{_ROOT}>"

    builder = _TreeBuilder()
    parser = DefusedXMLParser(target=builder, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    builder.expat = parser.parser
    builder.expat.buffer_text = False  # text events as they come, so their line numbers are right
    try:
        parser.feed(wrapped)
        parser.close()
    except ParseError as exc:
        line = exc.position[0]
        lines = _NEWLINE.split(wrapped)
        line_text = lines[line - 1] if 0 < line <= len(lines) else ""
        if "<!DOCTYPE" in line_text or "<!ENTITY" in line_text:
            reason = "<!DOCTYPE>: DTD and entity declarations are refused (entity expansion is an attack)"
        else:
            reason = f"malformed XML: {expat.ErrorString(exc.code)}"
            if exc.code == _TAG_MISMATCH and builder.stack:
                opened = builder.stack[-1]
                if opened.tag == _ROOT:
                    reason += " (a closing tag without its opening tag)"
                else:
                    reason += f" (<{opened.tag}> opened at line {opened.line} is not closed)"
        raise ConfigError(f"{source} line {line}: {reason}", line=line) from None
    except DefusedXmlException as exc:
        line = int(builder.expat.CurrentLineNumber)
        raise ConfigError(
            f"{source} line {line}: DTD and entity declarations are refused ({type(exc).__name__})", line=line
        ) from None
    except UnicodeError as exc:
        start = getattr(exc, "start", 0)
        line = wrapped[:start].count("\n") + 1
        raise ConfigError(f"{source} line {line}: text that is not valid Unicode", line=line) from None

    root = builder.root
    if root is None or root.tag != _ROOT:  # cannot happen: expat refuses a document that is not our root
        raise ConfigError(f"{source}: malformed XML")
    if builder.stray_text is not None:
        line, stray = builder.stray_text
        raise ConfigError(
            f"{source} line {line}: text {_show(stray)} outside <ossec_config>", line=line, element=None
        )
    return root


# --------------------------------------------------------------------------------------------------------
# Value converters: text in, value out, or `_Invalid` saying what was expected

_T = TypeVar("_T")
_Convert = Callable[[str], Any]


class _Invalid(Exception):
    def __init__(self, expected: str) -> None:
        super().__init__(expected)
        self.expected = expected


_INTEGER_RE: Final = re.compile(r"[0-9]{1,18}")
_NUMBER_RE: Final = re.compile(r"[0-9]{1,18}(?:\.[0-9]{1,18})?")
_SUBJECT_PREFIX_RE: Final = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_NAME_RE: Final = re.compile(r"[A-Za-z0-9_-]+")
_NATS_SCHEMES: Final = frozenset({"nats", "tls", "ws", "wss"})


def _show(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:77] + "...")


def _bool(value: str) -> bool:
    if value == "yes":
        return True
    if value == "no":
        return False
    raise _Invalid("expected yes or no")


def _integer(low: int, high: int | None = None) -> Callable[[str], int]:
    expected = f"expected an integer {low}-{high}" if high is not None else f"expected an integer >= {low}"

    def convert(value: str) -> int:
        if _INTEGER_RE.fullmatch(value) is None:
            raise _Invalid(expected)
        number = int(value)
        if number < low or (high is not None and number > high):
            raise _Invalid(expected)
        return number

    return convert


def _workers(value: str) -> int:
    """`auto` (one remoted process per core) or 1-64."""
    if value.strip().lower() == "auto":
        return 0
    try:
        return _integer(1, 64)(value)
    except _Invalid:
        raise _Invalid("expected auto or an integer 1-64") from None


def _number(low: float, high: float) -> Callable[[str], float]:
    expected = f"expected a number {low:g}-{high:g}"

    def convert(value: str) -> float:
        if _NUMBER_RE.fullmatch(value) is None:
            raise _Invalid(expected)
        number = float(value)
        if not low <= number <= high:
            raise _Invalid(expected)
        return number

    return convert


def _time(low: float, high: float | None = None, *, above: bool = False) -> Callable[[str], float]:
    if above:
        expected = f"expected a time greater than {low:g}"
    elif high is not None:
        expected = f"expected a time from {low:g} to {high:g} seconds"
    else:
        expected = f"expected a time of at least {low:g} second{'' if low == 1 else 's'}"
    expected += f" ({_TIME_HINT})"

    def convert(value: str) -> float:
        try:
            seconds = parse_time(value)
        except ValueError:
            raise _Invalid(expected) from None
        if (seconds <= low if above else seconds < low) or (high is not None and seconds > high):
            raise _Invalid(expected)
        return seconds

    return convert


def _choice(*options: str) -> Callable[[str], str]:
    quoted = [f"'{option}'" for option in options]
    expected = "expected " + (" or ".join(quoted) if len(quoted) <= 2 else ", ".join(quoted))

    def convert(value: str) -> str:
        if value not in options:
            raise _Invalid(expected)
        return value

    return convert


def _nonempty(value: str) -> str:
    if not value:
        raise _Invalid("expected a non-empty value")
    return value


def _ip_address(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise _Invalid("expected an IP address") from None


def _host(value: str) -> str:
    if not value or len(value) > 255 or "/" in value or any(char.isspace() for char in value):
        raise _Invalid("expected an IP address or host name")
    return value


def _node_name(value: str) -> str:
    if not value or len(value) > 255 or not value.isprintable() or any(char.isspace() for char in value):
        raise _Invalid("expected a node name without spaces")
    return value


def _protocols(value: str) -> tuple[str, ...]:
    wanted = {item.strip().lower() for item in value.split(",")}
    if not wanted <= {"tcp", "udp"}:
        raise _Invalid("expected tcp, udp or tcp,udp")
    return tuple(protocol for protocol in ("tcp", "udp") if protocol in wanted)


def _server_protocol(value: str) -> str:
    protocol = value.lower()
    if protocol not in ("tcp", "udp"):
        raise _Invalid("expected tcp or udp")
    return protocol


def _subject_prefix(value: str) -> str:
    if _SUBJECT_PREFIX_RE.fullmatch(value) is None:
        raise _Invalid("expected NATS subject tokens of letters, digits, '_' or '-' joined by dots")
    return value


def _nats_name(value: str) -> str:
    if _NAME_RE.fullmatch(value) is None:
        raise _Invalid("expected letters, digits, '_' or '-'")
    return value


def _keepalive_events(value: str) -> bool:
    if value == "all":
        return True
    if value == "none":
        return False
    raise _Invalid("expected all or none")


def _nats_urls(value: str) -> tuple[str, ...]:
    urls = []
    for item in value.split(","):
        url = item.strip()
        if not url:
            continue
        if any(char.isspace() for char in url):
            raise _Invalid("expected NATS URLs (nats://host:port) separated by commas")
        try:
            parts = urlsplit(url if "://" in url else f"nats://{url}")
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise _Invalid("expected NATS URLs (nats://host:port) separated by commas") from None
        if parts.scheme not in _NATS_SCHEMES or not parts.hostname:
            raise _Invalid("expected NATS URLs with scheme nats, tls, ws or wss, and a host")
        urls.append(url)
    return tuple(urls)


def _backend(value: str) -> str:
    if value == "sqlite":
        return value
    if value in ("postgresql", "postgres"):
        raise _Invalid("postgresql is not yet supported; use 'sqlite'")
    raise _Invalid("expected 'sqlite' (postgresql is not yet supported)")


# --------------------------------------------------------------------------------------------------------
# Sections: which element sets which field, and how it is checked

_Fields = Mapping[str, tuple[str, _Convert]]

_REMOTE_FIELDS: Final[_Fields] = {
    "port": ("port", _integer(1, 65535)),
    "protocol": ("protocols", _protocols),
    "queue_size": ("queue_size", _integer(1)),
    "local_ip": ("local_ip", _ip_address),
    "ipv6": ("ipv6", _bool),
    "rids_closing_time": ("rids_closing_time", _time(0, above=True)),
    "connection_overtake_time": ("connection_overtake_time", _time(0, 3600)),
    "connection_grace": ("connection_grace", _time(0, 3600)),
    "verify_msg_id": ("verify_msg_id", _bool),
    "keyupdate_interval": ("keyupdate_interval", _time(0, above=True)),
    "workers": ("workers", _workers),
}
# Wazuh options of <remote> that only matter to syslog connections.
_REMOTE_IGNORED: Final = frozenset({"connection", "allowed-ips", "denied-ips"})

_AGENTS_FIELDS: Final[_Fields] = {"allow_higher_versions": ("allow_higher_versions", _bool)}

_KEEPALIVE_FIELDS: Final[_Fields] = {
    "enabled": ("enabled", _bool),
    "interval": ("interval", _time(0, above=True)),
    "timeout": ("timeout", _time(0, above=True)),
}

_GLOBAL_FIELDS: Final[_Fields] = {
    "agents_disconnection_time": ("agents_disconnection_time", _time(1)),
    "agents_disconnection_alert_time": ("agents_disconnection_alert_time", _time(0)),
    "node_name": ("node_name", _node_name),
    "manager_host": ("manager_host", _host),
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

_NATS_FIELDS: Final[_Fields] = {
    "enabled": ("enabled", _bool),
    "subject_prefix": ("subject_prefix", _subject_prefix),
    "stream": ("stream", _nats_name),
    "kv_bucket": ("kv_bucket", _nats_name),
    "user": ("user", _nonempty),
    "password": ("password", _nonempty),
    "token": ("token", _nonempty),
    "creds_file": ("creds_file", _nonempty),
    "tls_ca": ("tls_ca", _nonempty),
    "tls_cert": ("tls_cert", _nonempty),
    "tls_key": ("tls_key", _nonempty),
    "keepalive_events": ("keepalive_events", _keepalive_events),
    "start_without_nats": ("start_without_nats", _bool),
}

_DATABASE_FIELDS: Final[_Fields] = {
    "backend": ("backend", _backend),
    "path": ("path", _nonempty),
    "allow_sql": ("allow_sql", _choice("no", "read-only")),
    "max_fragmentation": ("max_fragmentation", _number(0, 100)),
    "fragmentation_check_interval": ("fragmentation_check_interval", _time(1)),
    "purge_removed": ("purge_removed", _bool),
    "flush_interval": ("flush_interval", _time(0.05, 10)),
}

_CLIENT_FIELDS: Final[_Fields] = {
    "notify_time": ("notify_time", _time(0)),
    "time-reconnect": ("time_reconnect", _time(0)),
    "crypto_method": ("crypto_method", _choice("aes", "blowfish")),
    "state_interval": ("state_interval", _time(0, 86400)),
}
# Wazuh <client> options that have nothing to do with the connection agentpulse's agent keeps.
_CLIENT_IGNORED: Final = frozenset(
    {
        "auto_restart",
        "comp_avg_printout",
        "config-profile",
        "disable-active-response",
        "enrollment",
        "force_reconnect_interval",
        "ip_update_interval",
        "local_ip",
        "log_level",
        "max_attempts",
        "recv_counter_flush",
        "recv_timeout",
        "remote_conf",
        "request",
        "thread_stack_size",
        "verify_msg_id",
    }
)
# Pre-4.x ways of naming the manager, which agentpulse does not read.
_CLIENT_DEPRECATED: Final = frozenset({"server-ip", "server-hostname", "port", "protocol"})

_SERVER_FIELDS: Final[_Fields] = {
    "address": ("address", _host),
    "port": ("port", _integer(1, 65535)),
    "protocol": ("protocol", _server_protocol),
    "max_retries": ("max_retries", _integer(1)),
    "retry_interval": ("retry_interval", _time(0, above=True)),
}
_SERVER_IGNORED: Final = frozenset({"interface_index"})


@dataclass(slots=True)
class _Values:
    """The fields read so far for one dataclass, and where each came from (for cross-field errors)."""

    kwargs: dict[str, Any] = field(default_factory=dict)
    origin: dict[str, tuple[_Node, str]] = field(default_factory=dict)


class _Builder:
    def __init__(self, source: str) -> None:
        self.source = source

    # -- helpers ------------------------------------------------------------------------------------------

    def error(self, node: _Node, path: str, message: str) -> ConfigError:
        return ConfigError(f"{self.source} line {node.line}: {path}: {message}", line=node.line, element=path)

    def value(self, node: _Node, path: str, convert: Callable[[str], _T]) -> _T:
        if node.children:
            raise self.error(node, path, f"expected a value, found element <{node.children[0].tag}>")
        text = node.text
        try:
            return convert(text)
        except _Invalid as exc:
            raise self.error(node, path, f"invalid value {_show(text)}: {exc.expected}") from None

    def read(
        self,
        node: _Node,
        path: str,
        fields: _Fields,
        into: _Values,
        *,
        nested: Mapping[str, Callable[[_Node, str], None]] | None = None,
        ignored: frozenset[str] = frozenset(),
    ) -> None:
        """Read the children of `node` into `into`; an element neither known nor ignored is an error."""
        nested = nested or {}
        for child in node.children:
            child_path = f"{path}<{child.tag}>"
            if child.tag in fields:
                name, convert = fields[child.tag]
                into.kwargs[name] = self.value(child, child_path, convert)
                into.origin[name] = (child, child_path)
            elif child.tag in nested:
                nested[child.tag](child, child_path)
            elif child.tag not in ignored:
                known = ", ".join(f"<{tag}>" for tag in sorted([*fields, *nested]))
                raise self.error(child, child_path, f"unknown element (known: {known})")

    # -- the whole file -----------------------------------------------------------------------------------

    def build(self, root: _Node) -> Config:
        sections: dict[str, list[_Node]] = {}
        for block in root.children:
            if block.tag != "ossec_config":
                raise self.error(block, f"<{block.tag}>", "unexpected root element; expected <ossec_config>")
            for section in block.children:
                sections.setdefault(section.tag, []).append(section)
        if not root.children:
            raise ConfigError(f"{self.source}: no <ossec_config> element")

        return Config(
            remote=self.remote(sections.get("remote", [])),
            global_=self.global_(sections.get("global", []), sections.get("cluster", [])),
            nats=self.nats(sections.get("nats", [])),
            database=self.database(sections.get("database", [])),
            client=self.client(sections.get("client", []), sections.get("labels", [])),
        )

    # -- <remote> -----------------------------------------------------------------------------------------

    def remote(self, nodes: list[_Node]) -> RemoteConfig:
        secure: _Node | None = None
        for node in nodes:
            connections = [child for child in node.children if child.tag == "connection"]
            if not connections:
                raise self.error(node, "<remote>", "missing <connection> (secure or syslog)")
            connection = self.value(connections[-1], "<remote><connection>", _choice("secure", "syslog"))
            if connection != "secure":
                continue  # syslog input is not agentpulse's business
            if secure is not None:
                raise self.error(
                    node, "<remote>", f"a second secure <remote> block (the first is at line {secure.line})"
                )
            secure = node
        if secure is None:
            return RemoteConfig()

        values = _Values()
        keepalive = _Values()

        def agents(node: _Node, path: str) -> None:
            self.read(node, path, _AGENTS_FIELDS, values)

        def manager_keepalive(node: _Node, path: str) -> None:
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
            raise self.error(node, path, f"invalid value {_show(node.text)}: {rule}")
        return RemoteConfig(**values.kwargs, manager_keepalive=settings)

    # -- <global> (and <cluster><node_name>, where Wazuh keeps the node name) -----------------------------

    def global_(self, nodes: list[_Node], clusters: list[_Node]) -> GlobalConfig:
        values = _Values()
        for cluster in clusters:
            for child in cluster.children:
                if child.tag == "node_name":
                    values.kwargs["node_name"] = self.value(child, "<cluster><node_name>", _node_name)
        for node in nodes:
            self.read(node, "<global>", _GLOBAL_FIELDS, values, ignored=_WAZUH_GLOBAL_OPTIONS)
        return GlobalConfig(**values.kwargs)

    # -- <nats> -------------------------------------------------------------------------------------------

    def nats(self, nodes: list[_Node]) -> NatsConfig:
        values = _Values()
        urls: list[str] = []

        def url(node: _Node, path: str) -> None:
            urls.extend(self.value(node, path, _nats_urls))

        for node in nodes:
            self.read(node, "<nats>", _NATS_FIELDS, values, nested={"url": url})
        kwargs = values.kwargs
        pairs = (("user", "password"), ("password", "user"), ("tls_cert", "tls_key"), ("tls_key", "tls_cert"))
        for present, missing in pairs:
            if present in kwargs and missing not in kwargs:
                node, path = values.origin[present]
                raise self.error(node, path, f"set without <nats><{missing}>")
        return NatsConfig(**kwargs, urls=tuple(urls))

    # -- <database> ---------------------------------------------------------------------------------------

    def database(self, nodes: list[_Node]) -> DatabaseConfig:
        values = _Values()
        for node in nodes:
            self.read(node, "<database>", _DATABASE_FIELDS, values)
        return DatabaseConfig(**values.kwargs)

    # -- <client> and <labels> (agent side) ---------------------------------------------------------------

    def client(self, nodes: list[_Node], label_nodes: list[_Node]) -> ClientConfig | None:
        if not nodes:
            return None
        values = _Values()
        servers: list[ServerAddress] = []

        def server(node: _Node, path: str) -> None:
            server_values = _Values()
            self.read(node, path, _SERVER_FIELDS, server_values, ignored=_SERVER_IGNORED)
            if "address" not in server_values.kwargs:
                raise self.error(node, path, "missing <address>")
            servers.append(ServerAddress(**server_values.kwargs))

        def deprecated(node: _Node, path: str) -> None:
            raise self.error(
                node, path, "deprecated Wazuh option; use <client><server><address>/<port>/<protocol>"
            )

        nested = {"server": server} | dict.fromkeys(_CLIENT_DEPRECATED, deprecated)
        for node in nodes:
            self.read(node, "<client>", _CLIENT_FIELDS, values, nested=nested, ignored=_CLIENT_IGNORED)
        if not servers:
            raise self.error(nodes[0], "<client>", "no <server> configured")

        # Wazuh's rules (client-agent/config.c): 0 means the default, and a reconnect time that is not
        # longer than the notify time becomes three notify times.
        kwargs = values.kwargs
        notify_time = kwargs.get("notify_time") or _NOTIFY_TIME
        time_reconnect = kwargs.get("time_reconnect") or _RECONNECT_TIME
        if time_reconnect <= notify_time:
            time_reconnect = notify_time * 3
        kwargs.update(notify_time=notify_time, time_reconnect=time_reconnect)
        return ClientConfig(servers=tuple(servers), labels=self.labels(label_nodes), **kwargs)

    def labels(self, nodes: list[_Node]) -> tuple[tuple[str, str, bool, bool], ...]:
        labels: list[tuple[str, str, bool, bool]] = []
        for node in nodes:
            for child in node.children:
                path = f"<labels><{child.tag}>"
                if child.tag != "label":
                    raise self.error(child, path, "unknown element (known: <label>)")
                key = child.attrs.get("key", "")
                if not key:
                    raise self.error(child, path, 'missing or empty key attribute (<label key="...">)')
                hidden_text = child.attrs.get("hidden", "no")
                try:
                    hidden = _bool(hidden_text)
                except _Invalid as exc:
                    raise self.error(
                        child, f"{path}[hidden]", f"invalid value {_show(hidden_text)}: {exc.expected}"
                    ) from None
                value = self.value(child, f'<labels><label key="{key}">', str)
                labels.append((key, value, hidden, False))
        return tuple(labels)
