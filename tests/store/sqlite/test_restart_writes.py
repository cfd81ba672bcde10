"""After a restart, a keep-alive the agent table already holds moves only `last_keepalive` (store/written.py
`seed`): a restart storm does not rewrite every agent's columns and labels. What differs is written."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agentpulse.store.batch import Batch
from agentpulse.store.sqlite import schema
from agentpulse.store.sqlite.backend import SqliteBackend
from agentpulse.wire import control
from agentpulse.wire.keys import parse_line

KEEPALIVE = control.parse_keepalive(
    b"Linux |h |6.1 |#1 |x86_64 [Debian GNU/Linux|debian: 12 (bookworm)] - Wazuh v4.14.7\n"
    b'"env":prod\nx merged.mg\n'
)
UPGRADED = control.parse_keepalive(
    b"Linux |h |6.1 |#1 |x86_64 [Debian GNU/Linux|debian: 12 (bookworm)] - Wazuh v4.14.8\n"
    b'"env":prod\nx merged.mg\n'
)
RELABELLED = control.parse_keepalive(
    b"Linux |h |6.1 |#1 |x86_64 [Debian GNU/Linux|debian: 12 (bookworm)] - Wazuh v4.14.7\n"
    b'"env":test\nx merged.mg\n'
)
KEYS = [parse_line(f"00{n} agent{n} any {'a' * 64}") for n in (1, 2, 3)]


def opened(db_dir: Path) -> tuple[SqliteBackend, list[str]]:
    backend = SqliteBackend(db_dir, manager_host="mgr", node_name="node01")
    backend.open(1.0)
    backend.insert_missing([key for key in KEYS if key is not None], 1.0)
    backend.load()
    statements: list[str] = []
    backend._require_db().set_trace_callback(statements.append)
    return backend, statements


def rows(db_dir: Path) -> list[tuple[object, ...]]:
    db = sqlite3.connect(db_dir / "global.db")
    try:
        agents = db.execute(
            "SELECT id, version, last_keepalive FROM agent WHERE id != 0 ORDER BY id"
        ).fetchall()
        labels = db.execute(
            "SELECT id, key, value FROM labels WHERE key NOT LIKE '#%' ORDER BY id"
        ).fetchall()
        return agents + labels
    finally:
        db.close()


def test_after_a_restart_the_same_keepalive_moves_last_keepalive_only_and_a_changed_one_is_written(
    tmp_path: Path,
) -> None:
    first, _ = opened(tmp_path)
    first.write(Batch(keepalives={1: (10.0, KEEPALIVE), 2: (10.0, KEEPALIVE), 3: (10.0, KEEPALIVE)}), 10.0)
    first.close()

    again, statements = opened(tmp_path)
    again.write(Batch(keepalives={1: (20.0, KEEPALIVE), 2: (20.0, UPGRADED), 3: (20.0, RELABELLED)}), 20.0)
    touched = [s for s in statements if s.startswith("UPDATE agent SET last_keepalive")]
    assert len(touched) == 1 and "json_each('[1, 3]')" in touched[0]  # 3: only a label differs
    data = [s for s in statements if s.startswith("UPDATE agent SET version")]
    assert [s.rsplit("= ", 1)[1] for s in data] == ["2"]
    labels = [s for s in statements if s.startswith("DELETE FROM labels")]
    assert [s.rsplit("= ", 1)[1] for s in labels] == ["2", "3"]
    again.close()
    assert rows(tmp_path) == [
        (1, "Wazuh v4.14.7", 20),
        (2, "Wazuh v4.14.8", 20),
        (3, "Wazuh v4.14.7", 20),
        (1, '"env"', "prod"),
        (2, '"env"', "prod"),
        (3, '"env"', "test"),
    ]


def test_an_agent_whose_row_something_else_wrote_since_is_written_in_full(tmp_path: Path) -> None:
    first, _ = opened(tmp_path)
    first.write(Batch(keepalives={1: (10.0, KEEPALIVE)}), 10.0)
    first.close()
    db = schema.connect(tmp_path / "global.db")
    with db:  # what `global sync-agent-info-set` or the cluster leaves: not a keep-alive's 'synced'
        db.execute("UPDATE agent SET sync_status = 'syncreq' WHERE id = 1")
    db.close()
    again, statements = opened(tmp_path)
    again.write(Batch(keepalives={1: (20.0, KEEPALIVE)}), 20.0)
    again.close()
    assert any(s.startswith("UPDATE agent SET version") for s in statements)
    check = sqlite3.connect(tmp_path / "global.db")
    assert check.execute("SELECT sync_status FROM agent WHERE id = 1").fetchone() == ("synced",)
    check.close()
