"""The agent's side of `ossec.conf`: `<client>` (its `<server>`s, timers, cipher, `<enrollment>`) and the
top-level `<labels>`.

The file is read with the manager's configuration parts (`agentpulse.config`), and the manager's sections
are still checked: one `ossec.conf` is one configuration, and an error anywhere in it is an error, as it
was when both sides read the file in one pass. Wazuh's own rules for `notify_time` and `time-reconnect`
(client-agent/config.c) are applied here, so the daemon gets the values it will really use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Final

from agentpulse.config import convert as cv
from agentpulse.config.auth import DEFAULT_CIPHERS
from agentpulse.config.manager import build_config
from agentpulse.config.sections import (
    Fields,
    SectionReader,
    Sections,
    Values,
    parse_sections,
    read_config_text,
)
from agentpulse.config.xmltree import Node, show

__all__ = ["ClientConfig", "EnrollmentConfig", "ServerAddress", "load_agent_config", "parse_agent_config"]

# Wazuh's own client defaults (NOTIFY_TIME since v4.13, RECONNECT_TIME).
NOTIFY_TIME: Final = 20.0
RECONNECT_TIME: Final = 60.0


@dataclass(frozen=True, slots=True)
class ServerAddress:
    """One agent-side `<client><server>`."""

    address: str
    port: int = 1514
    protocol: str = "tcp"
    max_retries: int = 5
    retry_interval: float = 10.0


@dataclass(frozen=True, slots=True)
class EnrollmentConfig:
    """`<client><enrollment>` (reference 14.6): on by default, even without the element."""

    enabled: bool = True
    manager_address: str | None = None  # else each <server><address>
    port: int = 1515
    agent_name: str | None = None  # else the host name
    groups: str | None = None  # sent as G:, as written
    agent_address: str | None = None  # sent as IP:'<address>'
    use_source_ip: bool = False  # sent as IP:'src'
    ssl_cipher: str = DEFAULT_CIPHERS
    server_ca_path: str | None = None  # verify the manager's certificate (and its name) with this CA
    agent_certificate_path: str | None = None
    agent_key_path: str | None = None
    authorization_pass_path: str = "etc/authd.pass"
    auto_method: bool = False  # yes: allow TLS below 1.2
    delay_after_enrollment: float = 20.0  # seconds between a new key and the first handshake


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """The agent side: `<client>` plus the top-level `<labels>` (key, value, hidden, system)."""

    servers: tuple[ServerAddress, ...]
    notify_time: float = NOTIFY_TIME
    time_reconnect: float = RECONNECT_TIME
    crypto_method: str = "aes"
    labels: tuple[tuple[str, str, bool, bool], ...] = ()
    state_interval: float = 5.0
    enrollment: EnrollmentConfig = EnrollmentConfig()
    localfiles: tuple[str, ...] = ()  # <localfile><location>: files the agent tails (agent/logcollector.py)


def parse_agent_config(text: str, source: str = "ossec.conf") -> ClientConfig | None:
    """The `<client>` of an `ossec.conf` text (None without one), after checking the whole file."""
    sections = parse_sections(text, source)
    build_config(sections, source)  # the manager's sections first, in the order one pass checked them
    return _ClientReader(source).client(sections)


def load_agent_config(path: str | os.PathLike[str]) -> ClientConfig | None:
    """Read an `ossec.conf` file's `<client>`; a missing or unreadable file is a `ConfigError` too."""
    text, source = read_config_text(path)
    return parse_agent_config(text, source)


def _server_protocol(value: str) -> str:
    protocol = value.lower()
    if protocol not in ("tcp", "udp"):
        raise cv.Invalid("expected tcp or udp")
    return protocol


_CLIENT_FIELDS: Final[Fields] = {
    "notify_time": ("notify_time", cv.time(0)),
    "time-reconnect": ("time_reconnect", cv.time(0)),
    "crypto_method": ("crypto_method", cv.choice("aes", "blowfish")),
    "state_interval": ("state_interval", cv.time(0, 86400)),
}
# Wazuh <client> options that have nothing to do with the connection agentpulse's agent keeps.
_CLIENT_IGNORED: Final = frozenset(
    {
        "auto_restart",
        "comp_avg_printout",
        "config-profile",
        "disable-active-response",
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

_SERVER_FIELDS: Final[Fields] = {
    "address": ("address", cv.host),
    "port": ("port", cv.integer(1, 65535)),
    "protocol": ("protocol", _server_protocol),
    "max_retries": ("max_retries", cv.integer(1)),
    "retry_interval": ("retry_interval", cv.time(0, above=True)),
}
_SERVER_IGNORED: Final = frozenset({"interface_index"})

_ENROLLMENT_FIELDS: Final[Fields] = {
    "enabled": ("enabled", cv.boolean),
    "manager_address": ("manager_address", cv.host),
    "port": ("port", cv.integer(1, 65535)),
    "agent_name": ("agent_name", cv.nonempty),
    "groups": ("groups", cv.nonempty),
    "agent_address": ("agent_address", cv.nonempty),
    "use_source_ip": ("use_source_ip", cv.boolean),
    "ssl_cipher": ("ssl_cipher", cv.nonempty),
    "server_ca_path": ("server_ca_path", cv.nonempty),
    "agent_certificate_path": ("agent_certificate_path", cv.nonempty),
    "agent_key_path": ("agent_key_path", cv.nonempty),
    "authorization_pass_path": ("authorization_pass_path", cv.nonempty),
    "auto_method": ("auto_method", cv.boolean),
    "delay_after_enrollment": ("delay_after_enrollment", cv.time(0, above=True)),
}
_ENROLLMENT_IGNORED: Final = frozenset({"interface_index"})


class _ClientReader(SectionReader):
    def client(self, sections: Sections) -> ClientConfig | None:
        nodes = sections.get("client", [])
        if not nodes:
            return None
        values = Values()
        enrollment = Values()
        servers: list[ServerAddress] = []

        def server(node: Node, path: str) -> None:
            server_values = Values()
            self.read(node, path, _SERVER_FIELDS, server_values, ignored=_SERVER_IGNORED)
            if "address" not in server_values.kwargs:
                raise self.error(node, path, "missing <address>")
            servers.append(ServerAddress(**server_values.kwargs))

        def deprecated(node: Node, path: str) -> None:
            raise self.error(
                node, path, "deprecated Wazuh option; use <client><server><address>/<port>/<protocol>"
            )

        def enrollment_block(node: Node, path: str) -> None:
            self.read(node, path, _ENROLLMENT_FIELDS, enrollment, ignored=_ENROLLMENT_IGNORED)
            if "agent_address" in enrollment.kwargs and enrollment.kwargs.get("use_source_ip"):
                raise self.error(
                    node, path, "Incompatible sender_ip options: <agent_address> and <use_source_ip>yes"
                )

        nested = {"server": server, "enrollment": enrollment_block} | dict.fromkeys(
            _CLIENT_DEPRECATED, deprecated
        )
        for node in nodes:
            self.read(node, "<client>", _CLIENT_FIELDS, values, nested=nested, ignored=_CLIENT_IGNORED)
        if not servers:
            raise self.error(nodes[0], "<client>", "no <server> configured")

        # Wazuh's rules (client-agent/config.c): 0 means the default, and a reconnect time that is not
        # longer than the notify time becomes three notify times.
        kwargs = values.kwargs
        notify_time = kwargs.get("notify_time") or NOTIFY_TIME
        time_reconnect = kwargs.get("time_reconnect") or RECONNECT_TIME
        if time_reconnect <= notify_time:
            time_reconnect = notify_time * 3
        kwargs.update(notify_time=notify_time, time_reconnect=time_reconnect)
        return ClientConfig(
            servers=tuple(servers),
            labels=self.labels(sections.get("labels", [])),
            enrollment=EnrollmentConfig(**enrollment.kwargs),
            localfiles=self.localfiles(sections.get("localfile", [])),
            **kwargs,
        )

    def localfiles(self, nodes: list[Node]) -> tuple[str, ...]:
        """The `<location>` of each `<localfile>` (its other options are Wazuh's and not used here)."""
        locations: list[str] = []
        for node in nodes:
            found = [child for child in node.children if child.tag == "location"]
            if not found:
                raise self.error(node, "<localfile>", "missing <location>")
            locations.append(self.value(found[-1], "<localfile><location>", cv.nonempty))
        return tuple(locations)

    def labels(self, nodes: list[Node]) -> tuple[tuple[str, str, bool, bool], ...]:
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
                    hidden = cv.boolean(hidden_text)
                except cv.Invalid as exc:
                    raise self.error(
                        child, f"{path}[hidden]", f"invalid value {show(hidden_text)}: {exc.expected}"
                    ) from None
                value = self.value(child, f'<labels><label key="{key}">', str)
                labels.append((key, value, hidden, False))
        return tuple(labels)
