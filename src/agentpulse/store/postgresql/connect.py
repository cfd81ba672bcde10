"""The libpq connection string of the PostgreSQL backend, from `<database>`.

`<dsn>` (a URI or key=value pairs) is the base; `<host>`, `<port>`, `<user>`, `<dbname>`, `<password>` override
its parts; `<password_file>` is read at start (so the password need not sit in ossec.conf); with none of
them libpq's own PGPASSWORD / ~/.pgpass apply. The danger is the password in a log line: `redacted()`.
"""

from __future__ import annotations

from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from agentpulse.config.manager import DatabaseConfig

APPLICATION_NAME = "agentpulse"
CONNECT_TIMEOUT = 5  # seconds: a writer retrying against a stopped server must not hang for minutes


def conninfo(config: DatabaseConfig) -> str:
    parts: dict[str, str | int | None] = {
        "host": config.host,
        "port": config.port,
        "user": config.user,
        "dbname": config.dbname,
        "password": config.password,
    }
    if config.password_file:
        parts["password"] = Path(config.password_file).read_text().strip()
    base = config.dsn or ""
    present = conninfo_to_dict(base) if base else {}
    parts.setdefault("application_name", None)
    if "application_name" not in present:
        parts["application_name"] = APPLICATION_NAME
    if "connect_timeout" not in present:
        parts["connect_timeout"] = CONNECT_TIMEOUT
    return make_conninfo(base, **{key: value for key, value in parts.items() if value is not None})


def redacted(info: str) -> str:
    """The connection string without its password, for log lines and errors."""
    parts = conninfo_to_dict(info)
    parts.pop("password", None)
    return " ".join(f"{key}={value}" for key, value in parts.items())
