"""SQLite's dialect of the HTTP API's agent reads (`store/agentsql.py` builds the statements).

SQLite's semantics are the contract the PostgreSQL dialect imitates: LIKE is case-insensitive for ASCII, a
value compared to a column takes the column's affinity, text sorts bytewise (BINARY) and NULLs first. JSON is
built by SQLite (json_object, without the GIL); json_patch drops the members a patch sets to null.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from typing import Final

from agentpulse.store.agentquery import Format, Output
from agentpulse.store.agentsql import COLUMNS, Dialect, Fetched, Run

IN_CHUNK: Final = 500  # ids per `IN (...)`, well below SQLite's variable limit
UTC_TIME: Final = "'%Y-%m-%dT%H:%M:%S+00:00'"


class SqliteDialect(Dialect):
    mark = "?"
    like_any_case = "LIKE"
    minute = "CAST(at / 60 AS INTEGER)"

    def among(self, ids: Sequence[int]) -> tuple[str, object]:
        return "id IN (SELECT value FROM json_each(?))", "[" + ",".join(str(int(i)) for i in ids) + "]"

    def id_batches(self, ids: list[int]) -> Iterator[tuple[str, Sequence[object]]]:
        for start in range(0, len(ids), IN_CHUNK):
            chunk = ids[start : start + IN_CHUNK]
            yield f"id IN ({','.join('?' * len(chunk))})", chunk

    def json_value(self, output: Output) -> str:
        column = COLUMNS[output.field]
        if output.format is Format.PADDED_ID:
            return f"printf('%03d', {column})"
        if output.format is Format.UTC_TIME:
            return f"strftime({UTC_TIME}, {column}, 'unixepoch')"
        if output.format is Format.UTC_TIME_UNLESS_ZERO:
            return f"CASE WHEN {column} THEN strftime({UTC_TIME}, {column}, 'unixepoch') END"
        if output.format is Format.LIST:
            # names are checked ([\w.-]); escaping keeps any other text valid JSON, json_valid guards the rest
            quoted = f"replace(replace({column}, '\\', '\\\\'), '\"', '\\\"')"
            text = f"'[\"' || replace({quoted}, ',', '\",\"') || '\"]'"
            return f"CASE WHEN {column} IS NOT NULL AND {column} != '' AND json_valid({text}) THEN json({text}) END"
        return column

    def json_object(self, members: str) -> str:
        return f"json_patch('{{}}', json_object({members}))"

    def json_row(self, members: str) -> str:
        return self.json_object(members)


SQLITE: Final = SqliteDialect()


def runner(db: sqlite3.Connection) -> Run:
    """A `Run` on `db` giving plain tuples: a dict per row, where one is wanted, is built once by the caller."""

    def run(statement: str, params: Sequence[object]) -> Fetched:
        cursor = db.cursor()
        cursor.row_factory = None
        cursor.execute(statement, params)
        return Fetched([d[0] for d in cursor.description or ()], cursor.fetchall())

    return run
