"""`<api>`: the HTTP API, the fleet page and the `/metrics` route on one port (docs/api.md).

Like `<auth>`, no `<api>` element means no port: `read_api()` returns None. The shipped ossec.conf has
the block, listening on 127.0.0.1:55000 over HTTPS with a self-signed pair made on first start, as Wazuh's
API does. Relative paths are relative to the manager's home.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from agentpulse.config import convert as cv
from agentpulse.config.sections import Fields, SectionReader, Values
from agentpulse.config.xmltree import Node

__all__ = ["ApiConfig", "read_api"]


@dataclass(frozen=True, slots=True)
class ApiConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 55000
    https: bool = True
    cert: str = "etc/api/server.crt"
    key: str = "etc/api/server.key"
    users_file: str = "etc/api/users"
    token_key_file: str = "etc/api/jwt.key"  # the HS256 secret; a new one revokes every token
    auth_token_exp_timeout: float = 900.0  # Wazuh's default token lifetime
    max_login_attempts: int = 50  # failed logins from one address per block_time (Wazuh's api.yaml)
    block_time: float = 300.0
    metrics_auth: bool = False  # yes: /metrics needs a token too
    max_connections: int = 256


_API_FIELDS: Final[Fields] = {
    "enabled": ("enabled", cv.boolean),
    "host": ("host", cv.ip_address),
    "port": ("port", cv.integer(1, 65535)),
    "users_file": ("users_file", cv.nonempty),
    "token_key_file": ("token_key_file", cv.nonempty),
    "auth_token_exp_timeout": ("auth_token_exp_timeout", cv.time(30, 86400 * 365)),
    "max_login_attempts": ("max_login_attempts", cv.integer(1)),
    "block_time": ("block_time", cv.time(1)),
    "metrics_auth": ("metrics_auth", cv.boolean),
    "max_connections": ("max_connections", cv.integer(1, 65535)),
}
_HTTPS_FIELDS: Final[Fields] = {
    "enabled": ("https", cv.boolean),
    "cert": ("cert", cv.nonempty),
    "key": ("key", cv.nonempty),
}


class _ApiReader(SectionReader):
    def api(self, nodes: list[Node]) -> ApiConfig | None:
        if not nodes:
            return None
        values = Values()

        def https(node: Node, path: str) -> None:
            self.read(node, path, _HTTPS_FIELDS, values)

        for node in nodes:
            self.read(node, "<api>", _API_FIELDS, values, nested={"https": https})
        return ApiConfig(**values.kwargs)


def read_api(nodes: list[Node], source: str) -> ApiConfig | None:
    """The `<api>` sections of a file (merged in order), or None when there is none."""
    return _ApiReader(source).api(nodes)
