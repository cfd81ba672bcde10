"""Fragmentation, vacuum and the automatic vacuum of global.db."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentpulse.store import upkeep
from agentpulse.store.facade import Store
from agentpulse.store.sqlite import maintenance, schema
from agentpulse.wire.keys import KeysFile


def fragmented(path: Path) -> None:
    """Two tables written in turns, then one dropped: free pages and out-of-order pages."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE IF NOT EXISTS a (x TEXT)")
        db.execute("CREATE TABLE IF NOT EXISTS b (x TEXT)")
        for _ in range(200):
            db.execute("INSERT INTO a VALUES (?)", ("a" * 2000,))
            db.execute("INSERT INTO b VALUES (?)", ("b" * 2000,))
        db.commit()
        db.execute("DELETE FROM a")
        db.commit()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    keys = KeysFile.parse("".join(f"{n:03d} agent-{n} any key{n}\n" for n in range(1, 4)))
    store = Store(tmp_path / "db", manager_host="mgr", node_name="n", flush_interval=5)
    store.open(list(keys.active()))
    yield store
    store.close()


def test_fresh_database_is_not_fragmented(store: Store) -> None:
    state = maintenance.measure(store.global_db)
    assert state.free_pages_percentage == 0


def test_fragmentation_and_free_pages_of_a_fragmented_file(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    fragmented(path)
    state = maintenance.measure(path)
    assert state.fragmentation > 30
    assert state.free_pages_percentage > 30


def test_vacuum_file_shrinks_it_and_records_metadata(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    fragmented(path)
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE metadata (key TEXT PRIMARY KEY, value TEXT)")
        db.commit()
    before = maintenance.database_size(path)
    after = maintenance.vacuum_file(path)
    assert after <= 5
    assert maintenance.database_size(path) < before / 1.5
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert dict(db.execute("SELECT key, value FROM metadata"))["last_vacuum_value"] == str(after)


def test_automatic_vacuum_runs_only_above_the_limit(store: Store) -> None:
    def fragment(db: sqlite3.Connection) -> None:
        with db:
            db.execute("CREATE TABLE IF NOT EXISTS filler (x TEXT)")
            db.execute("CREATE TABLE IF NOT EXISTS other (x TEXT)")
            for _ in range(200):
                db.execute("INSERT INTO filler VALUES (?)", ("f" * 2000,))
                db.execute("INSERT INTO other VALUES (?)", ("o" * 2000,))
        with db:
            db.execute("DELETE FROM filler")

    with contextlib.closing(schema.connect(store.global_db)) as db:  # a second writer, as a test may
        fragment(db)
    state = maintenance.measure(store.global_db)
    assert state.fragmentation > 10
    patient = upkeep.Upkeep(store, max_fragmentation=100, interval=3600)
    assert asyncio.run(patient.check()) is None
    assert patient.vacuums == 0
    strict = upkeep.Upkeep(store, max_fragmentation=5, interval=3600)
    assert asyncio.run(strict.check()) is not None
    assert strict.vacuums == 1
    assert maintenance.measure(store.global_db).free_pages_percentage == 0


def test_upkeep_task_checks_every_interval(store: Store) -> None:
    async def scenario() -> int:
        task = upkeep.Upkeep(store, max_fragmentation=-1, interval=0.05)
        await task.start()
        await asyncio.sleep(0.4)
        await task.stop()
        return task.vacuums

    assert asyncio.run(scenario()) >= 2


def test_integrity_check_of_a_sound_and_of_a_damaged_file(tmp_path: Path, store: Store) -> None:
    assert maintenance.integrity_check(store.global_db) == ["ok"]
    damaged = tmp_path / "damaged.db"
    fragmented(damaged)
    data = bytearray(damaged.read_bytes())
    page_size = 4096
    for offset in range(page_size * 3, page_size * 3 + 200):
        data[offset] = 0xFF
    damaged.write_bytes(bytes(data))
    try:
        result = maintenance.integrity_check(damaged)
    except sqlite3.DatabaseError as error:  # damaged beyond what integrity_check can walk
        result = [str(error)]
    assert result != ["ok"]


def test_measure_never_writes_side_files_of_an_idle_database(tmp_path: Path) -> None:
    path = tmp_path / "idle.db"
    schema.create_agent_db(path)
    maintenance.measure(path)
    assert not Path(f"{path}-wal").exists()
