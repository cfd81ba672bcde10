"""`global sql <statement>`: ad-hoc read-only SQL, when `<database><allow_sql>` is `read-only`.

The statement runs in the backend's sandbox (`store/sqlite/sandbox.py`, or PostgreSQL's READ ONLY
transaction in `store/postgresql/reads.py`: read-only, a time limit, a size cap), in that backend's dialect,
on a thread of its own, so a slow one holds up neither the event loop nor the other clients' reads.
"""

from __future__ import annotations

from agentpulse.store.reader import AnswerTooLarge, Reader, SqlRefused
from agentpulse.wdb.commands.context import ALLOW_SQL_READ_ONLY, Command, Context
from agentpulse.wdb.protocol import OS_MAXSTR, Reply, dumps

SQL_TIME_LIMIT = 5.0  # seconds of SQLite work one `sql` request may take
MAX_ROWS_SIZE = OS_MAXSTR - 3  # the rows' JSON, so that `ok <rows>` fits a frame
DISABLED = "err SQL queries are disabled: <database><allow_sql> is 'no' (set it to 'read-only')"


def run_read_only_sql(reader: Reader, statement: str, time_limit: float = SQL_TIME_LIMIT) -> Reply:
    """One read-only statement on global.db; `ok [rows]` or Wazuh's `err Cannot execute ...`."""
    try:
        rows = reader.sql(statement, time_limit=time_limit, max_bytes=MAX_ROWS_SIZE)
    except AnswerTooLarge:
        return (
            f"err Cannot execute Global database query; the answer passes {OS_MAXSTR} bytes: "
            "narrow it (WHERE, LIMIT/OFFSET)"
        )
    except SqlRefused as error:
        return f"err Cannot execute Global database query; {error}"
    return "ok " + dumps(rows)


async def sql(ctx: Context, argument: str) -> Reply:
    if ctx.allow_sql != ALLOW_SQL_READ_ONLY:
        return DISABLED
    return await ctx.read_sql(lambda: run_read_only_sql(ctx.reader, argument, ctx.sql_time_limit))


COMMANDS = {"sql": Command(sql)}
