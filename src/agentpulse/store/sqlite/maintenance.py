"""SQLite maintenance: fragmentation, vacuum, integrity checks and sizes of database files.

The measures follow wazuh-db's (`wdb_get_db_state()`, `wdb_get_db_free_pages_percentage()`), except that
`fragmentation()` compares pages within one b-tree only, so the number means what it says. A vacuum
truncates the WAL and records itself in `metadata`, as wazuh-db does.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import time
from pathlib import Path

from agentpulse.store.backend import Fragmentation
from agentpulse.store.sqlite import schema


def fragmentation(db: sqlite3.Connection) -> Fragmentation:
    """Fragmentation and free pages of an open database, as percentages.

    Fragmentation is the share of pages that do not follow their predecessor when each b-tree is walked in
    order (SQLite's `dbstat`); the free-pages percentage is `freelist_count / page_count`. One deliberate
    difference from Wazuh: it walks `dbstat ORDER BY path` across all b-trees at once, which interleaves
    the trees level by level and reads about 40% on a global.db of 10,000 agents fresh from a VACUUM; we
    order by `name, path` and compare neighbours within one tree only, which reads about 1% there (50%
    before the vacuum).
    """
    pages = [(row[0], row[1]) for row in db.execute("SELECT name, pageno FROM dbstat ORDER BY name, path")]
    pairs = sequential = 0
    for (tree, page), (next_tree, next_page) in itertools.pairwise(pages):
        if tree == next_tree:  # pages of one b-tree only: a one-page table is in order by definition
            pairs += 1
            sequential += page + 1 == next_page
    state = 0 if pairs == 0 else round(100 * (1 - sequential / pairs))
    page_count = db.execute("PRAGMA page_count").fetchone()[0]
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    free_percentage = 0 if not page_count else round(100 * free / page_count)
    return Fragmentation(state, free_percentage)


def measure(path: Path) -> Fragmentation:
    """Fragmentation of a database file, read-only."""
    with contextlib.closing(schema.connect(path, readonly=True)) as db:
        return fragmentation(db)


def vacuum(db: sqlite3.Connection, now: float | None = None) -> int:
    """VACUUM an open write connection (no transaction open); returns the fragmentation after it.

    The vacuum rewrites the file, truncates the WAL (so the size on disk really drops) and records
    `last_vacuum_time` and `last_vacuum_value` in `metadata`, as wazuh-db does.
    """
    if db.in_transaction:
        db.commit()
    db.execute("VACUUM")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    after = fragmentation(db).fragmentation
    with db:
        db.executemany(
            "INSERT INTO metadata (key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [
                ("last_vacuum_time", str(int(time.time() if now is None else now))),
                ("last_vacuum_value", str(after)),
            ],
        )
    return after


def vacuum_file(path: Path) -> int:
    """VACUUM a database file with a connection of its own (a per-agent database, or global.db when no
    manager runs)."""
    with contextlib.closing(schema.connect(path)) as db:
        return vacuum(db)


def integrity_check(path: Path) -> list[str]:
    """`PRAGMA integrity_check` on a read-only connection: ["ok"] when the file is sound."""
    with contextlib.closing(schema.connect(path, readonly=True)) as db:
        return [str(row[0]) for row in db.execute("PRAGMA integrity_check")]


def database_size(path: Path) -> int:
    """Bytes on disk: the database file and its WAL."""
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(FileNotFoundError):
            total += Path(f"{path}{suffix}").stat().st_size
    return total
