"""`AgentQuery` as PostgreSQL statements, and the other reads of the HTTP API: the twin of
`store/sqlite/agentquery.py`, giving the same answers (SQLite's semantics are the contract).

Every value is a bound parameter and every column comes from the closed `AgentField` table, so client
text never becomes SQL. The danger is where the two engines differ: text sorts bytewise (COLLATE "C", as
SQLite's BINARY), NULLs sort first ascending (SQLite's way), LIKE is case-insensitive (ILIKE), a value
compared to a column takes the column's type (SQLite's affinity), and CAST to integer truncates. A page is
found as on SQLite: the ids first (from the nearer end), then their rows by primary key.
"""

from __future__ import annotations

import re
from typing import Any, Final

import psycopg
from psycopg.rows import tuple_row

from agentpulse.records import MANAGER_ID
from agentpulse.store.agentquery import (
    AgentField,
    AgentPage,
    AgentQuery,
    AllOf,
    Condition,
    Expr,
    Format,
    JsonPage,
    Op,
    Output,
    SortKey,
    StatusChange,
    Value,
)

Conn = psycopg.Connection[Any]

COLUMNS: Final[dict[AgentField, str]] = {
    field: f'"{field.value}"' if field is AgentField.GROUP else field.value for field in AgentField
}
COLUMNS[AgentField.IP] = "coalesce(ip, register_ip)"
INTEGER_FIELDS: Final = frozenset(
    {
        AgentField.ID,
        AgentField.STATUS_CODE,
        AgentField.LAST_KEEPALIVE,
        AgentField.DATE_ADD,
        AgentField.DISCONNECTION_TIME,
    }
)
HIDDEN_COLUMNS: Final = ("internal_key",)
TIME_FORMAT: Final = """'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'"""


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _bound(field: AgentField, value: Value) -> tuple[str, Value]:
    """The column and the value as SQLite's affinity would compare them: a number against a text column
    as text; a numeric text against an integer column as a number, any other text against it as text."""
    column = COLUMNS[field]
    if field not in INTEGER_FIELDS:
        return f'{column} COLLATE "C"', str(value)
    if isinstance(value, str):
        try:
            return column, int(value.strip())
        except ValueError:
            return f"CAST({column} AS TEXT)", value
    return column, value


def _condition(cond: Condition, params: list[object]) -> str:
    column = COLUMNS[cond.field]
    if cond.op in (Op.CONTAINS, Op.NOT_CONTAINS):
        params.append(f"%{_escape_like(str(cond.value))}%")
        negate = "NOT " if cond.op is Op.NOT_CONTAINS else ""
        return f"coalesce(CAST({column} AS TEXT), '') {negate}ILIKE %s ESCAPE '\\'"
    if cond.op is Op.IN_GROUP:
        params.append(f"%,{_escape_like(str(cond.value))},%")
        return f"(',' || coalesce({column}, '') || ',') LIKE %s ESCAPE '\\'"
    column, value = _bound(cond.field, cond.value)
    params.append(value)
    if cond.op is Op.NE:
        return f"({column} IS NULL OR {column} != %s)"
    return f"{column} {cond.op.value} %s"


def where_sql(expr: Expr, params: list[object]) -> str:
    if isinstance(expr, Condition):
        return _condition(expr, params)
    joiner = " AND " if isinstance(expr, AllOf) else " OR "
    if not expr.parts:
        return "TRUE" if isinstance(expr, AllOf) else "FALSE"
    return "(" + joiner.join(where_sql(part, params) for part in expr.parts) + ")"


def _order(keys: tuple[SortKey, ...], reverse: bool) -> str:
    terms = []
    for key in keys:
        if key.field is AgentField.ID:
            continue
        column = COLUMNS[key.field] + ("" if key.field in INTEGER_FIELDS else ' COLLATE "C"')
        descending = key.descending != reverse
        terms.append(f"{column} {'DESC NULLS LAST' if descending else 'ASC NULLS FIRST'}")
    by_id = next((key for key in keys if key.field is AgentField.ID), SortKey(AgentField.ID))
    terms.append(f"id {'DESC' if by_id.descending != reverse else 'ASC'}")
    return ", ".join(terms)


def _filter(query: AgentQuery) -> tuple[str, list[object]]:
    params: list[object] = []
    parts: list[str] = []
    if query.where is not None:
        parts.append(where_sql(query.where, params))
    if query.ids is not None:
        parts.append("id = ANY(%s)")
        params.append([int(i) for i in query.ids])
    return (" WHERE " + " AND ".join(parts)) if parts else "", params


def _page_ids(db: Conn, query: AgentQuery) -> tuple[int, list[int]]:
    where, params = _filter(query)
    with db.cursor(row_factory=tuple_row) as cur:
        counted = cur.execute(f"SELECT COUNT(*) FROM agent{where}", params).fetchone()
        total = int(counted[0]) if counted else 0
        offset = max(0, query.offset)
        limit = total - offset if query.limit is None else min(query.limit, total - offset)
        if limit <= 0:
            return total, []
        reverse = offset + limit / 2 > total / 2  # past the middle: read from the other end
        start = total - offset - limit if reverse else offset
        cur.execute(
            f"SELECT id FROM agent{where} ORDER BY {_order(query.sort, reverse)} LIMIT %s OFFSET %s",
            (*params, limit, start),
        )
        ids = [int(row[0]) for row in cur.fetchall()]
    if reverse:
        ids.reverse()
    return total, ids


def agents_page(db: Conn, query: AgentQuery) -> AgentPage:
    total, ids = _page_ids(db, query)
    return AgentPage(total, rows_by_id(db, ids))


def agents_json(db: Conn, query: AgentQuery, outputs: tuple[Output, ...]) -> JsonPage:
    """The page as one JSON object per agent, built by PostgreSQL (json_build_object)."""
    total, ids = _page_ids(db, query)
    if not ids:
        return JsonPage(total, [])
    with db.cursor(row_factory=tuple_row) as cur:
        cur.execute(f"SELECT id, {projection(outputs)} FROM agent WHERE id = ANY(%s)", (ids,))
        found: dict[int, str] = {int(row[0]): str(row[1]) for row in cur.fetchall()}
    return JsonPage(total, [found[i] for i in ids if i in found])


_KEY = re.compile(r"^[A-Za-z_][\w.]*$")


def _time(column: str) -> str:
    return f"to_char(to_timestamp({column}) AT TIME ZONE 'UTC', {TIME_FORMAT})"


def _json_value(output: Output) -> str:
    column = COLUMNS[output.field]
    if output.format is Format.PADDED_ID:
        return (
            f"CASE WHEN {column} BETWEEN 0 AND 99 THEN lpad({column}::text, 3, '0') ELSE {column}::text END"
        )
    if output.format is Format.UTC_TIME:
        return _time(column)
    if output.format is Format.UTC_TIME_UNLESS_ZERO:
        return f"CASE WHEN {column} != 0 THEN {_time(column)} END"
    if output.format is Format.LIST:
        # empty names dropped, as `api.fields.item` does
        return f"CASE WHEN {column} != '' THEN to_json(array_remove(string_to_array({column}, ','), '')) END"
    return column


def _members(outputs: list[Output]) -> str:
    for output in outputs:
        if not _KEY.match(output.key):
            raise ValueError(f"not a JSON key for SQL: {output.key!r}")
    return ", ".join(f"'{o.key}', {_json_value(o)}" for o in outputs)


def projection(outputs: tuple[Output, ...]) -> str:
    """SQL for one JSON object per row with these members in this order; NULLs (and a nested object all
    of whose members are NULL) are left out: json_strip_nulls drops null members at every depth."""
    parts: list[str] = []
    nested: dict[str, list[Output]] = {}
    for output in outputs:
        if output.within is None:
            parts.append(_members([output]))
            continue
        if output.within not in nested:
            nested[output.within] = []
            parts.append(output.within)  # a placeholder, filled below in first-seen order
        nested[output.within].append(output)
    for name, members in nested.items():
        columns = ", ".join(COLUMNS[m.field] for m in members)
        test = f"coalesce({columns})" if len(members) > 1 else columns
        inner = f"CASE WHEN {test} IS NULL THEN NULL ELSE json_build_object({_members(members)}) END"
        parts[parts.index(name)] = f"'{name}', {inner}"
    return f"json_strip_nulls(json_build_object({', '.join(parts)}))::text"


def rows_by_id(db: Conn, ids: list[int]) -> list[dict[str, object]]:
    """The agent rows of these ids in this order, without their NULL columns and the key."""
    if not ids:
        return []
    found: dict[int, dict[str, object]] = {}
    with db.cursor(row_factory=tuple_row) as cur:
        cur.execute("SELECT * FROM agent WHERE id = ANY(%s)", (ids,))
        names = [d.name for d in cur.description or ()]
        keep = [i for i, name in enumerate(names) if name not in HIDDEN_COLUMNS]
        id_index = names.index("id")
        for values in cur.fetchall():
            found[values[id_index]] = {names[i]: values[i] for i in keep if values[i] is not None}
    return [found[i] for i in ids if i in found]


def existing_ids(db: Conn, ids: list[int]) -> set[int]:
    with db.cursor(row_factory=tuple_row) as cur:
        cur.execute("SELECT id FROM agent WHERE id = ANY(%s)", ([int(i) for i in ids],))
        return {int(row[0]) for row in cur.fetchall()}


def history(db: Conn, agent_id: int, limit: int) -> list[StatusChange]:
    """The agent's latest status changes, newest first."""
    with db.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "SELECT seq, from_status, to_status, status_code, at FROM agent_status_history "
            "WHERE agent_id = %s ORDER BY seq DESC LIMIT %s",
            (agent_id, limit),
        ).fetchall()
    return [StatusChange(int(r[0]), str(r[1]), str(r[2]), int(r[3]), float(r[4])) for r in rows]


def changes_by_minute(db: Conn, since: float) -> list[tuple[int, str, str, int, int]]:
    """(minute, from, to, code, how many) of the status changes since `since` (epoch): the page's chart."""
    with db.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            # trunc, not CAST: PostgreSQL's CAST rounds where SQLite's truncates
            "SELECT trunc(at / 60)::bigint, from_status, to_status, status_code, COUNT(*) "
            "FROM agent_status_history WHERE at >= %s GROUP BY 1, 2, 3, 4",
            (since,),
        ).fetchall()
    return [(int(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4])) for r in rows]


def config_counts(db: Conn) -> dict[str, int]:
    """group_config_status -> agents, the manager left out."""
    with db.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            "SELECT group_config_status, COUNT(*) FROM agent WHERE id != %s GROUP BY group_config_status",
            (MANAGER_ID,),
        ).fetchall()
    return {str(row[0]): int(row[1]) for row in rows}


def group_counts(db: Conn) -> dict[str, int]:
    """Every group with its member count (0 for an empty one), oldest group first."""
    with db.cursor(row_factory=tuple_row) as cur:
        rows = cur.execute(
            'SELECT g.name, COUNT(b.id_agent) FROM "group" AS g LEFT JOIN belongs AS b ON b.id_group = g.id '
            "WHERE g.name IS NOT NULL GROUP BY g.id ORDER BY g.id"
        ).fetchall()
    return {str(row[0]): int(row[1]) for row in rows}
