"""`<database>` for PostgreSQL: the DSN or its parts, the password file, and what must go together."""

from __future__ import annotations

from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

from agentpulse.config import parse_config
from agentpulse.store.postgresql.connect import conninfo, redacted
from tests.config.helpers import assert_error, conf


def test_backend_postgresql_with_a_dsn() -> None:
    config = parse_config(
        conf("<database><backend>postgresql</backend><dsn>postgresql://ap@db1:5433/fleet</dsn></database>")
    )
    assert config.database.backend == "postgresql"
    parts = conninfo_to_dict(conninfo(config.database))
    assert (parts["host"], parts["port"], parts["user"], parts["dbname"]) == ("db1", "5433", "ap", "fleet")
    assert parts["application_name"] == "agentpulse"


def test_parts_override_the_dsn_and_the_password_comes_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "pgpass"
    secret.write_text("s3cret\n")
    config = parse_config(
        conf(
            "<database><backend>postgresql</backend><dsn>postgresql://ap@db1/fleet</dsn>"
            f"<host>db2</host><port>6000</port><password_file>{secret}</password_file></database>"
        )
    )
    info = conninfo(config.database)
    parts = conninfo_to_dict(info)
    assert (parts["host"], parts["port"], parts["password"]) == ("db2", "6000", "s3cret")
    assert "s3cret" not in redacted(info)


def test_postgresql_without_dsn_or_host_is_an_error() -> None:
    assert_error(conf("<database><backend>postgresql</backend></database>"), "<database>", "needs <dsn>")


def test_a_dsn_without_backend_postgresql_is_an_error() -> None:
    text = conf("<database><dsn>postgresql://db1/fleet</dsn></database>")
    assert_error(text, "<dsn>", "<database><dsn>", "backend>postgresql")
