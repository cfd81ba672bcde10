"""`<auth>`: enrolment on port 1515 (wazuh-authd's `Read_Authd()`, reference section 14.5).

Wazuh's defaults apply once an `<auth>` element exists. Without one, `Read_Authd()` never runs and its
zeroed settings leave remote enrolment off, so port 1515 is not opened: `read_auth()` then returns None.
Paths stay as written; a relative one is relative to the manager's home (`etc/sslmanager.cert`), as it is
to Wazuh's install directory. agentpulse adds the bind address and the limits that keep one source from
taking the listener for itself.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from agentpulse.config import convert as cv
from agentpulse.config.sections import Fields, SectionReader, Values
from agentpulse.config.xmltree import Node, show

__all__ = ["DEFAULT_CIPHERS", "AuthConfig", "ForceOptions", "read_auth"]

DEFAULT_CIPHERS: Final = "HIGH:!ADH:!EXP:!MD5:!RC4:!3DES:!CAMELLIA:@STRENGTH"


@dataclass(frozen=True, slots=True)
class ForceOptions:
    """`<force>`: when a new enrolment may replace an agent of the same name (or IP)."""

    enabled: bool = True
    key_mismatch: bool = True
    disconnected_time_enabled: bool = True
    disconnected_time: float = 3600.0
    after_registration_time: float = 3600.0


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """`<auth>` with Wazuh's code defaults (`purge` is no in code, yes in the shipped template)."""

    disabled: bool = False
    port: int = 1515
    ipv6: bool = False
    use_source_ip: bool = False
    force: ForceOptions = ForceOptions()
    purge: bool = False
    use_password: bool = False
    ciphers: str = DEFAULT_CIPHERS
    ssl_agent_ca: str | None = None
    ssl_verify_host: bool = False
    ssl_manager_cert: str = "etc/sslmanager.cert"
    ssl_manager_key: str = "etc/sslmanager.key"
    ssl_auto_negotiate: bool = False
    remote_enrollment: bool = True
    allow_higher_versions: bool = False
    local_ip: str | None = None  # agentpulse: the bind address (Wazuh binds every address)
    max_connections: int = 1000  # agentpulse: open enrolment connections at once (Wazuh's AUTH_POOL)
    source_rate: int = 200  # agentpulse: new connections per second from one address (0: no limit)

    @property
    def listens(self) -> bool:
        """Port 1515 is opened (`<disabled>no` and `<remote_enrollment>yes`)."""
        return not self.disabled and self.remote_enrollment


_AUTH_FIELDS: Final[Fields] = {
    "disabled": ("disabled", cv.boolean),
    "port": ("port", cv.integer(1, 65535)),
    "ipv6": ("ipv6", cv.boolean),
    "use_source_ip": ("use_source_ip", cv.boolean),
    "purge": ("purge", cv.boolean),
    "use_password": ("use_password", cv.boolean),
    "ciphers": ("ciphers", cv.nonempty),
    "ssl_agent_ca": ("ssl_agent_ca", cv.nonempty),
    "ssl_verify_host": ("ssl_verify_host", cv.boolean),
    "ssl_manager_cert": ("ssl_manager_cert", cv.nonempty),
    "ssl_manager_key": ("ssl_manager_key", cv.nonempty),
    "ssl_auto_negotiate": ("ssl_auto_negotiate", cv.boolean),
    "remote_enrollment": ("remote_enrollment", cv.boolean),
    "local_ip": ("local_ip", cv.ip_address),
    "max_connections": ("max_connections", cv.integer(1, 65535)),
    "source_rate": ("source_rate", cv.integer(0, 1_000_000)),
}
# limit_maxagents: deprecated since 4.1.0 and ignored by Wazuh too. key_request: an external key lookup
# for remoted, not part of enrolment.
_AUTH_IGNORED: Final = frozenset({"limit_maxagents", "key_request"})
_AGENTS_FIELDS: Final[Fields] = {"allow_higher_versions": ("allow_higher_versions", cv.boolean)}
_FORCE_FIELDS: Final[Fields] = {
    "enabled": ("enabled", cv.boolean),
    "key_mismatch": ("key_mismatch", cv.boolean),
    "after_registration_time": ("after_registration_time", cv.time(0)),
}


class _AuthReader(SectionReader):
    def auth(self, nodes: list[Node]) -> AuthConfig | None:
        if not nodes:
            return None
        values = Values()
        force = Values()

        def agents(node: Node, path: str) -> None:
            self.read(node, path, _AGENTS_FIELDS, values)

        def force_block(node: Node, path: str) -> None:
            self.read(node, path, _FORCE_FIELDS, force, nested={"disconnected_time": disconnected_time})

        def disconnected_time(node: Node, path: str) -> None:
            enabled = node.attrs.get("enabled")
            if not enabled:
                raise self.error(node, path, 'Empty attribute for disconnected_time (enabled="yes|no")')
            try:
                force.kwargs["disconnected_time_enabled"] = cv.boolean(enabled)
            except cv.Invalid as exc:
                raise self.error(
                    node, f"{path}[enabled]", f"invalid value {show(enabled)}: {exc.expected}"
                ) from None
            force.kwargs["disconnected_time"] = self.value(node, path, cv.time(0))

        def force_insert(node: Node, path: str) -> None:  # deprecated since 4.3.0: <force><enabled>
            force.kwargs["enabled"] = self.value(node, path, cv.boolean)

        def force_time(node: Node, path: str) -> None:  # deprecated since 4.3.0; 0 disabled the check
            seconds = self.value(node, path, cv.time(0))
            force.kwargs.update(disconnected_time_enabled=seconds > 0, disconnected_time=seconds)

        nested = {
            "agents": agents,
            "force": force_block,
            "force_insert": force_insert,
            "force_time": force_time,
        }
        for node in nodes:
            self.read(node, "<auth>", _AUTH_FIELDS, values, nested=nested, ignored=_AUTH_IGNORED)
        config = AuthConfig(**values.kwargs)
        return replace(config, force=ForceOptions(**force.kwargs))


def read_auth(nodes: list[Node], source: str) -> AuthConfig | None:
    """The `<auth>` sections of a file (merged in order), or None when there is none."""
    return _AuthReader(source).auth(nodes)
