"""The home's database as the command lines read it: the `<database>` of its ossec.conf picks the backend.

`agent_control` and `agentpulse status` open a `Reader` through this, so they read PostgreSQL exactly as
they read global.db. A home without ossec.conf (or a CLI run before `init`) reads SQLite, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentpulse.config.manager import DatabaseConfig, load_config
from agentpulse.paths import Home
from agentpulse.store.backends import db_dir_of, describe, reader_for
from agentpulse.store.reader import Reader


@dataclass(frozen=True, slots=True)
class HomeDatabase:
    reader: Reader
    where: str  # for messages: a file name or a redacted DSN


def database_config(home: Home) -> DatabaseConfig:
    """The home's `<database>` (ConfigError when ossec.conf is there but wrong)."""
    if not home.ossec_conf.exists():
        return DatabaseConfig()
    return load_config(home.ossec_conf).database


def open_database(home: Home) -> HomeDatabase:
    config = database_config(home)
    db_dir = db_dir_of(config, home.db_dir)
    return HomeDatabase(reader_for(config, db_dir), describe(config, db_dir))
