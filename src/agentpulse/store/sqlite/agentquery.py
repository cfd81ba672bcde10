"""`AgentQuery` as SQLite statements, and the other reads of the HTTP API (history, group and sync counts).

Every value is a bound parameter and every column comes from the closed `AgentField` table, so client
text never becomes SQL. A page is found in two steps: the ids (a small sort, run by SQLite without the
GIL), then their rows by primary key. A page past the middle is read from the other end with the order
reversed, so `offset=199500` over 200,000 agents sorts 500 rows, not 200,000.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Final

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
)
from agentpulse.store.sqlite import schema

COLUMNS: Final[dict[AgentField, str]] = {
    field: f"`{field.value}`" if field is AgentField.GROUP else field.value for field in AgentField
}
COLUMNS[AgentField.IP] = "coalesce(ip, register_ip)"
HIDDEN_COLUMNS: Final = ("internal_key",)
IN_CHUNK: Final = 500  # ids per `IN (...)`, well below SQLite's variable limit


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _condition(cond: Condition, params: list[object]) -> str:
    column = COLUMNS[cond.field]
    if cond.op in (Op.CONTAINS, Op.NOT_CONTAINS):
        params.append(f"%{_escape_like(str(cond.value))}%")
        negate = "NOT " if cond.op is Op.NOT_CONTAINS else ""
        return f"coalesce(CAST({column} AS TEXT), '') {negate}LIKE ? ESCAPE '\\'"
    if cond.op is Op.IN_GROUP:
        params.append(f"%,{_escape_like(str(cond.value))},%")
        return f"(',' || coalesce({column}, '') || ',') LIKE ? ESCAPE '\\'"
    params.append(cond.value)
    if cond.op is Op.NE:
        return f"({column} IS NULL OR {column} != ?)"
    return f"{column} {cond.op.value} ?"


def where_sql(expr: Expr, params: list[object]) -> str:
    if isinstance(expr, Condition):
        return _condition(expr, params)
    joiner = " AND " if isinstance(expr, AllOf) else " OR "
    if not expr.parts:
        return "1" if isinstance(expr, AllOf) else "0"
    return "(" + joiner.join(where_sql(part, params) for part in expr.parts) + ")"


def _order(keys: tuple[SortKey, ...], reverse: bool) -> str:
    terms = [
        f"{COLUMNS[key.field]} {'DESC' if key.descending != reverse else 'ASC'}"
        for key in keys
        if key.field is not AgentField.ID
    ]
    by_id = next((key for key in keys if key.field is AgentField.ID), SortKey(AgentField.ID))
    terms.append(f"id {'DESC' if by_id.descending != reverse else 'ASC'}")
    return ", ".join(terms)


def _filter(query: AgentQuery) -> tuple[str, list[object]]:
    params: list[object] = []
    parts: list[str] = []
    if query.where is not None:
        parts.append(where_sql(query.where, params))
    if query.ids is not None:
        parts.append("id IN (SELECT value FROM json_each(?))")
        params.append("[" + ",".join(str(int(i)) for i in query.ids) + "]")
    return (" WHERE " + " AND ".join(parts)) if parts else "", params


def _page_ids(db: sqlite3.Connection, query: AgentQuery) -> tuple[int, list[int]]:
    where, params = _filter(query)
    total = int(db.execute(f"SELECT COUNT(*) FROM agent{where}", params).fetchone()[0])
    offset = max(0, query.offset)
    limit = total - offset if query.limit is None else min(query.limit, total - offset)
    if limit <= 0:
        return total, []
    reverse = offset + limit / 2 > total / 2  # past the middle: read from the other end
    start = total - offset - limit if reverse else offset
    ids = [
        int(row[0])
        for row in db.execute(
            f"SELECT id FROM agent{where} ORDER BY {_order(query.sort, reverse)} LIMIT ? OFFSET ?",
            (*params, limit, start),
        )
    ]
    if reverse:
        ids.reverse()
    return total, ids


def agents_page(db: sqlite3.Connection, query: AgentQuery) -> AgentPage:
    total, ids = _page_ids(db, query)
    return AgentPage(total, rows_by_id(db, ids))


def agents_json(db: sqlite3.Connection, query: AgentQuery, outputs: tuple[Output, ...]) -> JsonPage:
    """The page as one JSON object per agent, built by SQLite (json_object, without the GIL)."""
    total, ids = _page_ids(db, query)
    select = projection(outputs)
    found: dict[int, str] = {}
    for start in range(0, len(ids), IN_CHUNK):
        chunk = ids[start : start + IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        cursor = db.cursor()
        cursor.row_factory = None
        found.update(cursor.execute(f"SELECT id, {select} FROM agent WHERE id IN ({marks})", chunk))
    return JsonPage(total, [found[i] for i in ids if i in found])


_KEY = re.compile(r"^[A-Za-z_][\w.]*$")


def _json_value(output: Output) -> str:
    column = COLUMNS[output.field]
    if output.format is Format.PADDED_ID:
        return f"printf('%03d', {column})"
    if output.format is Format.UTC_TIME:
        return f"strftime('%Y-%m-%dT%H:%M:%S+00:00', {column}, 'unixepoch')"
    if output.format is Format.UTC_TIME_UNLESS_ZERO:
        return f"CASE WHEN {column} THEN strftime('%Y-%m-%dT%H:%M:%S+00:00', {column}, 'unixepoch') END"
    if output.format is Format.LIST:
        # names are checked ([\w.-]); escaping keeps any other text valid JSON, json_valid guards the rest
        quoted = f"replace(replace({column}, '\\', '\\\\'), '\"', '\\\"')"
        text = f"'[\"' || replace({quoted}, ',', '\",\"') || '\"]'"
        return (
            f"CASE WHEN {column} IS NOT NULL AND {column} != '' AND json_valid({text}) THEN json({text}) END"
        )
    return column


def _members(outputs: list[Output]) -> str:
    for output in outputs:
        if not _KEY.match(output.key):
            raise ValueError(f"not a JSON key for SQL: {output.key!r}")
    return ", ".join(f"'{o.key}', {_json_value(o)}" for o in outputs)


def projection(outputs: tuple[Output, ...]) -> str:
    """SQL for one JSON object per row with these members in this order; NULLs (and a nested object all
    of whose members are NULL) are left out: json_patch drops the members a patch sets to null."""
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
        inner = f"CASE WHEN {test} IS NULL THEN NULL ELSE json_patch('{{}}', json_object({_members(members)})) END"
        parts[parts.index(name)] = f"'{name}', {inner}"
    return f"json_patch('{{}}', json_object({', '.join(parts)}))"


def rows_by_id(db: sqlite3.Connection, ids: list[int]) -> list[dict[str, object]]:
    """The agent rows of these ids in this order, without their NULL columns and the key."""
    found: dict[int, dict[str, object]] = {}
    for start in range(0, len(ids), IN_CHUNK):
        chunk = ids[start : start + IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        cursor = db.cursor()
        cursor.row_factory = None  # plain tuples: a dict per row is built once, below
        cursor.execute(f"SELECT * FROM agent WHERE id IN ({marks})", chunk)
        names = [d[0] for d in cursor.description]
        keep = [i for i, name in enumerate(names) if name not in HIDDEN_COLUMNS]
        id_index = names.index("id")
        for values in cursor:
            found[values[id_index]] = {names[i]: values[i] for i in keep if values[i] is not None}
    return [found[i] for i in ids if i in found]


def existing_ids(db: sqlite3.Connection, ids: list[int]) -> set[int]:
    rows = db.execute("SELECT id FROM agent WHERE id IN (SELECT value FROM json_each(?))", (str(ids),))
    return {int(row[0]) for row in rows}


def history(db: sqlite3.Connection, agent_id: int, limit: int) -> list[StatusChange]:
    """The agent's latest status changes, newest first."""
    rows = db.execute(
        "SELECT seq, from_status, to_status, status_code, at FROM agent_status_history "
        "WHERE agent_id = ? ORDER BY seq DESC LIMIT ?",
        (agent_id, limit),
    )
    return [StatusChange(int(r[0]), str(r[1]), str(r[2]), int(r[3]), float(r[4])) for r in rows]


def changes_by_minute(db: sqlite3.Connection, since: float) -> list[tuple[int, str, str, int, int]]:
    """(minute, from, to, code, how many) of the status changes since `since` (epoch): the page's chart."""
    rows = db.execute(
        "SELECT CAST(at / 60 AS INTEGER), from_status, to_status, status_code, COUNT(*) "
        "FROM agent_status_history WHERE at >= ? GROUP BY 1, 2, 3, 4",
        (since,),
    )
    return [(int(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4])) for r in rows]


def config_counts(db: sqlite3.Connection) -> dict[str, int]:
    """group_config_status -> agents, the manager left out."""
    rows = db.execute(
        "SELECT group_config_status, COUNT(*) FROM agent WHERE id != ? GROUP BY group_config_status",
        (schema.MANAGER_ID,),
    )
    return {str(row[0]): int(row[1]) for row in rows}


def group_counts(db: sqlite3.Connection) -> dict[str, int]:
    """Every group with its member count (0 for an empty one), oldest group first."""
    rows = db.execute(
        "SELECT g.name, COUNT(b.id_agent) FROM `group` AS g LEFT JOIN belongs AS b ON b.id_group = g.id "
        "WHERE g.name IS NOT NULL GROUP BY g.id ORDER BY g.id"
    )
    return {str(row[0]): int(row[1]) for row in rows}
