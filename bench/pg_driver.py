"""psycopg 3 against asyncpg for the store's flush: N status updates + N history rows + N outbox rows and
N keep-alive touches in one transaction, on one throwaway PostgreSQL, both drivers in the same run.

Each driver is tried with the statement shapes it is good at: psycopg with executemany (pipeline mode),
with COPY for the inserts, and with one UPDATE ... FROM unnest(arrays); asyncpg with executemany, with
copy_records_to_table, and with unnest. Prints the median commit latency per flush and rows/s.

    .venv/bin/python bench/pg_driver.py --agents 10000 --changes 2000 --flushes 15
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import psycopg  # noqa: E402
from tests.pgserver import PostgresServer  # noqa: E402

SCHEMA = """
DROP TABLE IF EXISTS agent, history, outbox;
CREATE TABLE agent (id INTEGER PRIMARY KEY, connection_status TEXT, status_code INTEGER,
    disconnection_time BIGINT, last_keepalive BIGINT);
CREATE TABLE history (agent_id INTEGER, seq INTEGER, from_status TEXT, to_status TEXT, status_code INTEGER,
    at DOUBLE PRECISION, PRIMARY KEY (agent_id, seq));
CREATE TABLE outbox (id BIGSERIAL PRIMARY KEY, subject TEXT, msg_id TEXT, payload BYTEA,
    created DOUBLE PRECISION);
"""
UPDATE_ONE = (
    "UPDATE agent SET connection_status = $1, status_code = $2, disconnection_time = $3 WHERE id = $4"
)
UPDATE_UNNEST = (
    "UPDATE agent AS a SET connection_status = u.s, status_code = u.c, disconnection_time = u.t "
    "FROM unnest($1::text[], $2::int[], $3::bigint[], $4::int[]) AS u(s, c, t, id) WHERE a.id = u.id"
)
TOUCH = "UPDATE agent SET last_keepalive = $1 WHERE id = ANY($2::int[])"
HISTORY = "INSERT INTO history VALUES ($1, $2, $3, $4, $5, $6)"
OUTBOX = "INSERT INTO outbox (subject, msg_id, payload, created) VALUES ($1, $2, $3, $4)"
PAYLOAD = b'{"agent":{"id":"001","name":"agent-001"},"status":"active","previous":"pending","code":0}' * 2


def pg(sql: str) -> str:
    """$n placeholders as psycopg's %s."""
    for n in range(9, 0, -1):
        sql = sql.replace(f"${n}", "%s")
    return sql


def flush_rows(flush: int, agents: int, changes: int) -> tuple[list[tuple[object, ...]], ...]:
    ids = [(flush * changes + i) % agents + 1 for i in range(changes)]
    seq = flush + 1
    status = "active" if flush % 2 else "disconnected"
    updates = [(status, 0, flush, agent_id) for agent_id in ids]
    history = [(agent_id, seq, "pending", status, 0, time.time()) for agent_id in ids]
    outbox = [(f"agent.status.{agent_id}", f"{agent_id:03d}:{seq}", PAYLOAD, time.time()) for agent_id in ids]
    return updates, history, outbox


def psycopg_flush(style: str) -> Callable[[psycopg.Connection, int, int, int], None]:
    def run(conn: psycopg.Connection, flush: int, agents: int, changes: int) -> None:
        updates, history, outbox = flush_rows(flush, agents, changes)
        with conn.transaction(), conn.cursor() as cur:
            if style == "unnest":
                cur.execute(pg(UPDATE_UNNEST), [list(col) for col in zip(*updates, strict=True)])
            else:
                cur.executemany(pg(UPDATE_ONE), updates)
            cur.execute(pg(TOUCH), (flush, list(range(1, agents + 1))))
            if style == "executemany":
                cur.executemany(pg(HISTORY), history)
                cur.executemany(pg(OUTBOX), outbox)
            else:
                with cur.copy("COPY history FROM STDIN") as copy:
                    for row in history:
                        copy.write_row(row)
                with cur.copy("COPY outbox (subject, msg_id, payload, created) FROM STDIN") as copy:
                    for row in outbox:
                        copy.write_row(row)

    return run


def asyncpg_flush(style: str) -> Callable[[asyncpg.Connection, int, int, int], object]:
    async def run(conn: asyncpg.Connection, flush: int, agents: int, changes: int) -> None:
        updates, history, outbox = flush_rows(flush, agents, changes)
        async with conn.transaction():
            if style == "unnest":
                await conn.execute(UPDATE_UNNEST, *[list(col) for col in zip(*updates, strict=True)])
            else:
                await conn.executemany(UPDATE_ONE, updates)
            await conn.execute(TOUCH, flush, list(range(1, agents + 1)))
            if style == "executemany":
                await conn.executemany(HISTORY, history)
                await conn.executemany(OUTBOX, outbox)
            else:
                await conn.copy_records_to_table("history", records=history)
                await conn.copy_records_to_table(
                    "outbox", records=outbox, columns=["subject", "msg_id", "payload", "created"]
                )

    return run


def reset(dsn: str, agents: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(
            "INSERT INTO agent SELECT g, 'never_connected', 0, 0, 0 FROM generate_series(1, %s) g", (agents,)
        )


def report(name: str, latencies: list[float], rows_per_flush: int) -> None:
    median = statistics.median(latencies)
    print(
        f"{name:28s} median {median * 1000:8.1f} ms/flush  p90 {sorted(latencies)[int(len(latencies) * 0.9)] * 1000:8.1f} ms  "
        f"{rows_per_flush / median:10,.0f} rows/s"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--changes", type=int, default=2_000, help="status changes per flush")
    parser.add_argument("--flushes", type=int, default=15)
    args = parser.parse_args()
    rows = 3 * args.changes  # status update + history + outbox (the keep-alive touch is one statement)
    server = PostgresServer()
    server.start()
    try:
        dsn = server.create_database("bench")
        print(f"{args.agents} agents, {args.changes} status changes per flush, {args.flushes} flushes")
        for style in ("executemany", "copy", "unnest"):
            reset(dsn, args.agents)
            with psycopg.connect(dsn) as conn:
                run = psycopg_flush(style)
                latencies = []
                for flush in range(args.flushes):
                    start = time.perf_counter()
                    run(conn, flush, args.agents, args.changes)
                    latencies.append(time.perf_counter() - start)
            report(f"psycopg {style}", latencies, rows)

            async def with_asyncpg(style: str = style) -> list[float]:
                conn = await asyncpg.connect(dsn)
                run = asyncpg_flush(style)
                latencies = []
                for flush in range(args.flushes):
                    start = time.perf_counter()
                    await run(conn, flush, args.agents, args.changes)
                    latencies.append(time.perf_counter() - start)
                await conn.close()
                return latencies

            reset(dsn, args.agents)
            report(f"asyncpg {style}", asyncio.run(with_asyncpg()), rows)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
