"""`AgentQuery` as SQL, and the other reads of the HTTP API, written once for both backends.

A backend gives its `Dialect` (the parameter mark, how a value meets a column, how a column sorts, how a row
becomes JSON) and a way to run one statement on one connection; `store/sqlite/agentquery.py` and
`store/postgresql/agentquery.py` hold only that, SQLite's semantics being the contract.

Every value is a bound parameter and every column comes from the closed `AgentField` table, so client text
never becomes SQL. A page is found in two steps: the ids (a small sort, run by the database), then their rows
by primary key. A page past the middle is read from the other end with the order reversed, so
`offset=199500` over 200,000 agents sorts 500 rows, not 200,000.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from agentpulse.records import MANAGER_ID
from agentpulse.store.agentquery import (
    AgentField,
    AgentPage,
    AgentQuery,
    AllOf,
    Condition,
    Expr,
    JsonPage,
    Op,
    Output,
    SortKey,
    StatusChange,
    Value,
)

# "group" is a keyword on both engines; the double quotes are standard SQL, which SQLite accepts too.
COLUMNS: Final[dict[AgentField, str]] = {
    field: f'"{field.value}"' if field is AgentField.GROUP else field.value for field in AgentField
}
COLUMNS[AgentField.IP] = "coalesce(ip, register_ip)"
HIDDEN_COLUMNS: Final = ("internal_key",)
_KEY: Final = re.compile(r"^[A-Za-z_][\w.]*$")


@dataclass(frozen=True, slots=True)
class Fetched:
    """What one statement gave: the column names and the rows as plain tuples."""

    names: list[str]
    rows: Sequence[Sequence[Any]]


Run = Callable[[str, Sequence[object]], Fetched]  # one statement with its parameters, on one connection


class Dialect(abc.ABC):
    """What differs between the engines in the statements below."""

    mark: ClassVar[str]  # a bound parameter
    like_any_case: ClassVar[str]  # the case-insensitive LIKE (Wazuh's `~`)
    minute: ClassVar[str]  # agent_status_history.at as whole minutes since the epoch, truncated

    def compared(self, field: AgentField, value: Value) -> tuple[str, Value]:
        """The column and the value that `=`, `!=`, `<` and `>` bind, as SQLite compares them."""
        return COLUMNS[field], value

    def sort_term(self, field: AgentField, descending: bool) -> str:
        """One ORDER BY term; NULLs come first ascending, as on SQLite."""
        return f"{COLUMNS[field]} {'DESC' if descending else 'ASC'}"

    @abc.abstractmethod
    def among(self, ids: Sequence[int]) -> tuple[str, object]:
        """A condition that `id` is one of `ids`, and its one parameter."""

    @abc.abstractmethod
    def id_batches(self, ids: list[int]) -> Iterator[tuple[str, Sequence[object]]]:
        """`ids` as conditions on `id` with their parameters (none for no ids), as few as the engine allows."""

    @abc.abstractmethod
    def json_value(self, output: Output) -> str:
        """The SQL of one member's value, in its `Format`."""

    @abc.abstractmethod
    def json_object(self, members: str) -> str:
        """A nested JSON object of these `'key', value` members."""

    @abc.abstractmethod
    def json_row(self, members: str) -> str:
        """The JSON text of a row's object of these members, NULL members left out at every depth."""


def escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _condition(dialect: Dialect, cond: Condition, params: list[object]) -> str:
    column, mark = COLUMNS[cond.field], dialect.mark
    if cond.op in (Op.CONTAINS, Op.NOT_CONTAINS):
        params.append(f"%{escape_like(str(cond.value))}%")
        negate = "NOT " if cond.op is Op.NOT_CONTAINS else ""
        return f"coalesce(CAST({column} AS TEXT), '') {negate}{dialect.like_any_case} {mark} ESCAPE '\\'"
    if cond.op is Op.IN_GROUP:
        params.append(f"%,{escape_like(str(cond.value))},%")
        return f"(',' || coalesce({column}, '') || ',') LIKE {mark} ESCAPE '\\'"
    column, value = dialect.compared(cond.field, cond.value)
    params.append(value)
    if cond.op is Op.NE:
        return f"({column} IS NULL OR {column} != {mark})"
    return f"{column} {cond.op.value} {mark}"


def where_sql(dialect: Dialect, expr: Expr, params: list[object]) -> str:
    if isinstance(expr, Condition):
        return _condition(dialect, expr, params)
    if not expr.parts:
        return "TRUE" if isinstance(expr, AllOf) else "FALSE"
    joiner = " AND " if isinstance(expr, AllOf) else " OR "
    return "(" + joiner.join(where_sql(dialect, part, params) for part in expr.parts) + ")"


def _order(dialect: Dialect, keys: tuple[SortKey, ...], reverse: bool) -> str:
    terms = [
        dialect.sort_term(k.field, k.descending != reverse) for k in keys if k.field is not AgentField.ID
    ]
    by_id = next((key for key in keys if key.field is AgentField.ID), SortKey(AgentField.ID))
    terms.append(f"id {'DESC' if by_id.descending != reverse else 'ASC'}")
    return ", ".join(terms)


def _filter(dialect: Dialect, query: AgentQuery) -> tuple[str, list[object]]:
    params: list[object] = []
    parts: list[str] = []
    if query.where is not None:
        parts.append(where_sql(dialect, query.where, params))
    if query.ids is not None:
        condition, param = dialect.among(query.ids)
        parts.append(condition)
        params.append(param)
    return (" WHERE " + " AND ".join(parts)) if parts else "", params


def _page_ids(dialect: Dialect, run: Run, query: AgentQuery) -> tuple[int, list[int]]:
    where, params = _filter(dialect, query)
    counted = run(f"SELECT COUNT(*) FROM agent{where}", params).rows
    total = int(counted[0][0]) if counted else 0
    offset = max(0, query.offset)
    limit = total - offset if query.limit is None else min(query.limit, total - offset)
    if limit <= 0:
        return total, []
    reverse = offset + limit / 2 > total / 2  # past the middle: read from the other end
    start = total - offset - limit if reverse else offset
    order, mark = _order(dialect, query.sort, reverse), dialect.mark
    found = run(
        f"SELECT id FROM agent{where} ORDER BY {order} LIMIT {mark} OFFSET {mark}", (*params, limit, start)
    )
    ids = [int(row[0]) for row in found.rows]
    if reverse:
        ids.reverse()
    return total, ids


def _members(dialect: Dialect, outputs: list[Output]) -> str:
    for output in outputs:
        if not _KEY.match(output.key):
            raise ValueError(f"not a JSON key for SQL: {output.key!r}")
    return ", ".join(f"'{o.key}', {dialect.json_value(o)}" for o in outputs)


def projection(dialect: Dialect, outputs: tuple[Output, ...]) -> str:
    """SQL for one JSON object per row with these members in this order; NULLs (and a nested object all
    of whose members are NULL) are left out."""
    parts: list[str] = []
    nested: dict[str, list[Output]] = {}
    for output in outputs:
        if output.within is None:
            parts.append(_members(dialect, [output]))
            continue
        if output.within not in nested:
            nested[output.within] = []
            parts.append(output.within)  # a placeholder, filled below in first-seen order
        nested[output.within].append(output)
    for name, members in nested.items():
        columns = ", ".join(COLUMNS[m.field] for m in members)
        test = f"coalesce({columns})" if len(members) > 1 else columns
        inner = (
            f"CASE WHEN {test} IS NULL THEN NULL ELSE {dialect.json_object(_members(dialect, members))} END"
        )
        parts[parts.index(name)] = f"'{name}', {inner}"
    return dialect.json_row(", ".join(parts))


def _rows_by_id(dialect: Dialect, run: Run, ids: list[int]) -> list[dict[str, object]]:
    """The agent rows of these ids in this order, without their NULL columns and the key."""
    found: dict[int, dict[str, object]] = {}
    for condition, params in dialect.id_batches(ids):
        fetched = run(f"SELECT * FROM agent WHERE {condition}", params)
        names = fetched.names
        keep = [i for i, name in enumerate(names) if name not in HIDDEN_COLUMNS]
        id_index = names.index("id")
        for values in fetched.rows:
            found[values[id_index]] = {names[i]: values[i] for i in keep if values[i] is not None}
    return [found[i] for i in ids if i in found]


class AgentQueryReads(abc.ABC):
    """The HTTP API's part of `Reader` (`store/reader.py`), for a reader that gives its `dialect` and, in
    `_statements()`, a `Run` on one connection whose errors it raises as `ReadFailed`."""

    dialect: ClassVar[Dialect]

    @abc.abstractmethod
    def _statements(self) -> AbstractContextManager[Run]: ...

    def agents_page(self, query: AgentQuery) -> AgentPage:
        """The rows of one page of agents matching `query`, and how many match."""
        with self._statements() as run:
            total, ids = _page_ids(self.dialect, run, query)
            return AgentPage(total, _rows_by_id(self.dialect, run, ids))

    def agents_json(self, query: AgentQuery, outputs: tuple[Output, ...]) -> JsonPage:
        """One page of agents as JSON objects (`outputs` says which members) built by the database (no Python
        object per row), and how many match."""
        select = projection(self.dialect, outputs)
        found: dict[int, str] = {}
        with self._statements() as run:
            total, ids = _page_ids(self.dialect, run, query)
            for condition, params in self.dialect.id_batches(ids):
                rows = run(f"SELECT id, {select} FROM agent WHERE {condition}", params).rows
                found.update((int(row[0]), str(row[1])) for row in rows)
        return JsonPage(total, [found[i] for i in ids if i in found])

    def existing_ids(self, ids: list[int]) -> set[int]:
        condition, param = self.dialect.among(ids)
        with self._statements() as run:
            return {int(row[0]) for row in run(f"SELECT id FROM agent WHERE {condition}", (param,)).rows}

    def history(self, agent_id: int, limit: int) -> list[StatusChange]:
        """The agent's latest status changes, newest first."""
        mark = self.dialect.mark
        with self._statements() as run:
            rows = run(
                "SELECT seq, from_status, to_status, status_code, at FROM agent_status_history "
                f"WHERE agent_id = {mark} ORDER BY seq DESC LIMIT {mark}",
                (agent_id, limit),
            ).rows
        return [StatusChange(int(r[0]), str(r[1]), str(r[2]), int(r[3]), float(r[4])) for r in rows]

    def changes_by_minute(self, since: float) -> list[tuple[int, str, str, int, int]]:
        """(minute, from, to, code, how many) of the status changes since `since` (epoch): the page's chart."""
        with self._statements() as run:
            rows = run(
                f"SELECT {self.dialect.minute}, from_status, to_status, status_code, COUNT(*) "
                f"FROM agent_status_history WHERE at >= {self.dialect.mark} GROUP BY 1, 2, 3, 4",
                (since,),
            ).rows
        return [(int(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4])) for r in rows]

    def config_counts(self) -> dict[str, int]:
        """group_config_status -> agents, the manager left out."""
        with self._statements() as run:
            rows = run(
                "SELECT group_config_status, COUNT(*) FROM agent "
                f"WHERE id != {self.dialect.mark} GROUP BY group_config_status",
                (MANAGER_ID,),
            ).rows
        return {str(row[0]): int(row[1]) for row in rows}

    def group_counts(self) -> dict[str, int]:
        """Every group with its member count (0 for an empty one), oldest group first."""
        with self._statements() as run:
            rows = run(
                'SELECT g.name, COUNT(b.id_agent) FROM "group" AS g LEFT JOIN belongs AS b ON b.id_group = g.id '
                "WHERE g.name IS NOT NULL GROUP BY g.id ORDER BY g.id",
                (),
            ).rows
        return {str(row[0]): int(row[1]) for row in rows}
