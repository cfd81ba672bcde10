"""PostgreSQL's dialect of the HTTP API's agent reads (`store/agentsql.py` builds the statements), giving the
same answers as SQLite's (`store/sqlite/agentquery.py`: SQLite's semantics are the contract).

The danger is where the two engines differ: text sorts bytewise (COLLATE "C", as SQLite's BINARY), NULLs
sort first ascending (SQLite's way), LIKE is case-insensitive (ILIKE), a value compared to a column takes
the column's type (SQLite's affinity), and CAST to integer truncates where PostgreSQL's rounds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Final

import psycopg
from psycopg.rows import tuple_row

from agentpulse.store.agentquery import AgentField, Format, Output, Value
from agentpulse.store.agentsql import COLUMNS, Dialect, Fetched, Run

INTEGER_FIELDS: Final = frozenset(
    {
        AgentField.ID,
        AgentField.STATUS_CODE,
        AgentField.LAST_KEEPALIVE,
        AgentField.DATE_ADD,
        AgentField.DISCONNECTION_TIME,
    }
)
TIME_FORMAT: Final = """'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'"""


def _time(column: str) -> str:
    return f"to_char(to_timestamp({column}) AT TIME ZONE 'UTC', {TIME_FORMAT})"


class PostgresDialect(Dialect):
    mark = "%s"
    like_any_case = "ILIKE"
    minute = "trunc(at / 60)::bigint"  # trunc, not CAST: PostgreSQL's CAST rounds where SQLite's truncates

    def compared(self, field: AgentField, value: Value) -> tuple[str, Value]:
        """A number against a text column as text; a numeric text against an integer column as a number,
        any other text against it as text (SQLite's affinity)."""
        column = COLUMNS[field]
        if field not in INTEGER_FIELDS:
            return f'{column} COLLATE "C"', str(value)
        if isinstance(value, str):
            try:
                return column, int(value.strip())
            except ValueError:
                return f"CAST({column} AS TEXT)", value
        return column, value

    def sort_term(self, field: AgentField, descending: bool) -> str:
        column = COLUMNS[field] + ("" if field in INTEGER_FIELDS else ' COLLATE "C"')
        return f"{column} {'DESC NULLS LAST' if descending else 'ASC NULLS FIRST'}"

    def among(self, ids: Sequence[int]) -> tuple[str, object]:
        return "id = ANY(%s)", [int(i) for i in ids]

    def id_batches(self, ids: list[int]) -> Iterator[tuple[str, Sequence[object]]]:
        if ids:
            yield "id = ANY(%s)", (ids,)

    def json_value(self, output: Output) -> str:
        column = COLUMNS[output.field]
        if output.format is Format.PADDED_ID:
            return f"CASE WHEN {column} BETWEEN 0 AND 99 THEN lpad({column}::text, 3, '0') ELSE {column}::text END"
        if output.format is Format.UTC_TIME:
            return _time(column)
        if output.format is Format.UTC_TIME_UNLESS_ZERO:
            return f"CASE WHEN {column} != 0 THEN {_time(column)} END"
        if output.format is Format.LIST:
            # empty names dropped, as `api.fields.item` does
            return (
                f"CASE WHEN {column} != '' THEN to_json(array_remove(string_to_array({column}, ','), '')) END"
            )
        return column

    def json_object(self, members: str) -> str:
        return f"json_build_object({members})"

    def json_row(self, members: str) -> str:
        # json_strip_nulls drops null members at every depth, the nested objects' included
        return f"json_strip_nulls(json_build_object({members}))::text"


POSTGRES: Final = PostgresDialect()


def runner(db: psycopg.Connection[Any]) -> Run:
    """A `Run` on `db` giving plain tuples, whatever the connection's own row factory."""

    def run(statement: str, params: Sequence[object]) -> Fetched:
        with db.cursor(row_factory=tuple_row) as cur:
            cur.execute(statement, params)
            return Fetched([column.name for column in cur.description or ()], cur.fetchall())

    return run
