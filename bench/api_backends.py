"""The HTTP API's agent reads on SQLite and on PostgreSQL, same fleet, same run: the time of one GET /agents
page as the API builds it (`agents_request` parsed, `Reader.agents_json`: the store's read and its JSON).

Each size fills a global.db and a PostgreSQL database (a throwaway server, tests/pgserver.py) with the same
agents (a real fleet's columns: OS, version, groups, keep-alive times, statuses), then times each request
(median and max of `--repeat`, after one warm-up) on both. No HTTP and no manager: what is compared is the
backend; bench/api.py measures the whole manager on SQLite.

    .venv/bin/python bench/api_backends.py --sizes 20000,200000 --repeat 5
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qsl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pgserver import PostgresServer  # noqa: E402

from agentpulse.api.fields import outputs  # noqa: E402
from agentpulse.api.http import Request  # noqa: E402
from agentpulse.api.query import agents_request  # noqa: E402
from agentpulse.store.backend import Backend  # noqa: E402
from agentpulse.store.facade import Store  # noqa: E402
from agentpulse.store.postgresql.backend import PostgresBackend  # noqa: E402
from agentpulse.store.reader import Reader  # noqa: E402
from agentpulse.store.sqlite.backend import SqliteBackend  # noqa: E402

REQUESTS = {
    "deep_sorted": "limit=500&offset={deep}&sort=-lastKeepAlive",
    "first_sorted": "limit=500&offset=0&sort=-lastKeepAlive",
    "middle_sorted": "limit=500&offset={middle}&sort=-lastKeepAlive",
    "disconnected": "status=disconnected&limit=500",
    "disconnected_deep": "status=disconnected&limit=500&offset={deep_disc}",
    "q_name": "q=name~fleet-0001&limit=500",
}
COLUMNS = (
    "id, name, ip, register_ip, os_name, os_version, os_platform, os_arch, version, date_add, last_keepalive,"
    ' "group", connection_status, status_code, disconnection_time'
)


def fleet(agents: int) -> list[tuple[object, ...]]:
    now = int(time.time())
    rng = random.Random(15)
    rows = []
    for n in range(1, agents + 1):
        status = rng.choice(("active", "disconnected", "disconnected", "never_connected"))
        rows.append(
            (
                n, f"fleet-{n:06d}", f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}", "any", "Ubuntu", "22.04.4 LTS",
                "ubuntu", "x86_64", "Wazuh v4.14.7", now - 86400 * 30, now - rng.randint(0, 86400 * 7),
                "default" if n % 3 else "default,web", status, 4 if status == "disconnected" else 0,
                now - 30 if status == "disconnected" else 0,
            )
        )  # fmt: skip
    return rows


def opened(backend: Backend, db_dir: Path) -> None:
    store = Store(db_dir, manager_host="bench", node_name="node01", backend=backend)
    store.open([])
    store.close()


def fill_sqlite(db_dir: Path, rows: list[tuple[object, ...]]) -> Reader:
    backend = SqliteBackend(db_dir, manager_host="bench", node_name="node01")
    opened(backend, db_dir)
    db = sqlite3.connect(db_dir / "global.db")
    with db:
        marks = ", ".join("?" * len(rows[0]))
        columns = COLUMNS.replace('"', "`")
        db.executemany(f"INSERT INTO agent ({columns}) VALUES ({marks})", rows)
    db.execute("ANALYZE")
    db.close()
    return backend.reader()


def fill_postgresql(dsn: str, db_dir: Path, rows: list[tuple[object, ...]]) -> Reader:
    import psycopg

    backend = PostgresBackend(dsn, manager_host="bench", node_name="node01")
    opened(backend, db_dir)
    with psycopg.connect(dsn) as db:
        with db.cursor() as cur, cur.copy(f"COPY agent ({COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        db.commit()
        db.autocommit = True
        db.execute("VACUUM ANALYZE agent")
    return backend.reader()


def timed(reader: Reader, text: str, repeat: int) -> tuple[float, float, list[str]]:
    parsed = agents_request(Request("GET", "/agents", parse_qsl(text), {}, b"", ""), time.time())
    shape = outputs(parsed.select)
    page = reader.agents_json(parsed.query, shape)  # warm-up
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        page = reader.agents_json(parsed.query, shape)
        samples.append((time.perf_counter() - started) * 1000)
    assert len(page.items) > 0, text
    return statistics.median(samples), max(samples), page.items


def same(sqlite: list[str], postgresql: list[str]) -> bool:
    """The same items, the manager's row (each database made its own, a second apart) by id only."""
    left, right = ([json.loads(i) for i in items] for items in (sqlite, postgresql))
    return [i["id"] for i in left] == [i["id"] for i in right] and [i for i in left if i["id"] != "000"] == [
        i for i in right if i["id"] != "000"
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,200000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"load average at the start {Path('/proc/loadavg').read_text().split()[0]} (2 cores, shared)")
    server = PostgresServer()
    server.start()
    try:
        with tempfile.TemporaryDirectory(prefix="api-backends-") as tmp:
            for size in (int(s) for s in args.sizes.split(",")):
                rows = fleet(size)
                disconnected = sum(1 for r in rows if r[12] == "disconnected")
                values = {"deep": size + 1 - 500, "middle": size // 2, "deep_disc": disconnected - 500}
                started = time.monotonic()
                readers = {
                    "sqlite": fill_sqlite(Path(tmp) / f"s{size}", rows),
                    "postgresql": fill_postgresql(
                        server.create_database(f"api_{size}"), Path(tmp) / f"p{size}", rows
                    ),
                }
                print(
                    f"\n{size:,} agents ({disconnected:,} disconnected), filled in {time.monotonic() - started:.0f} s"
                )
                print(f"{'request':<18} {'sqlite p50/max ms':>18} {'postgresql p50/max ms':>22}  items")
                for name, template in REQUESTS.items():
                    text = template.format(**values)
                    (s50, smax, n), (p50, pmax, m) = (timed(r, text, args.repeat) for r in readers.values())
                    assert same(n, m), name  # the same answer
                    print(
                        f"{name:<18} {s50:>9.1f}/{smax:<8.1f} {p50:>12.1f}/{pmax:<9.1f} {len(n):>5}  {text}"
                    )
                for reader in readers.values():
                    reader.close()
    finally:
        server.stop()
    print(f"\nload average at the end {Path('/proc/loadavg').read_text().split()[0]} (2 cores, shared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
