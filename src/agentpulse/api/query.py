"""Wazuh's agent filters as an `AgentQuery`: `q` (field op value, `;` AND, `,` OR, parentheses), `search`,
`status`, `older_than`, the per-field filters, `select`, `sort`, `offset` and `limit` (reference 16.3).

Nothing here touches SQL: unknown fields, operators and malformed values are refused with Wazuh's codes
(1403, 1407, 1408, 1409, 1411, 1412, 1724), and values go to the store as data. Times are turned into
epoch thresholds here (`lastKeepAlive<1d` is "heard within the last day").
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Final

from agentpulse.api.errors import ApiError, bad_request
from agentpulse.api.fields import FIELDS, NUMERIC_FIELDS, SELECTABLE, TIME_FIELDS
from agentpulse.api.http import Request
from agentpulse.status import ConnectionStatus
from agentpulse.store.agentquery import (
    AgentField,
    AgentQuery,
    AllOf,
    AnyOf,
    Condition,
    Expr,
    Op,
    SortKey,
)

DEFAULT_LIMIT: Final = 500
MAX_LIMIT: Final = 100000
MAX_QUERY: Final = 4096  # characters of q
TIMEFRAME: Final = re.compile(r"^(\d+)([smhdw]?)$")
UNITS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
CONDITION: Final = re.compile(r"([\w.]+)(!=|=|<|>|~)([^;,()]*)")
VALUE_CHARS: Final = re.compile(r"^[\w _\-.:?\\/'\"=@%<>{}\[\]+*|#]*$")
STATUSES: Final = tuple(status.value for status in ConnectionStatus)
SEARCH_FIELDS: Final = (
    AgentField.NAME,
    AgentField.IP,
    AgentField.REGISTER_IP,
    AgentField.STATUS,
    AgentField.VERSION,
    AgentField.OS_NAME,
    AgentField.OS_PLATFORM,
    AgentField.OS_VERSION,
    AgentField.GROUP,
    AgentField.NODE_NAME,
    AgentField.MANAGER,
)
# per-field filters of GET /agents (query parameter -> field)
FILTERS: Final = {
    "os.platform": AgentField.OS_PLATFORM,
    "os.version": AgentField.OS_VERSION,
    "os.name": AgentField.OS_NAME,
    "manager": AgentField.MANAGER,
    "node_name": AgentField.NODE_NAME,
    "name": AgentField.NAME,
    "ip": AgentField.IP,
    "registerIP": AgentField.REGISTER_IP,
    "group_config_status": AgentField.GROUP_CONFIG_STATUS,
}


def timeframe(text: str) -> float | None:
    """Seconds of a Wazuh timeframe (`30`, `30s`, `15m`, `2h`, `7d`, `1w`), or None."""
    match = TIMEFRAME.match(text.strip())
    return None if match is None else int(match.group(1)) * UNITS[match.group(2)]


def date_value(text: str) -> float | None:
    for form in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"):
        try:
            moment = datetime.datetime.strptime(text.strip(), form)
        except ValueError:
            continue
        return moment.replace(tzinfo=datetime.UTC).timestamp()
    return None


def condition(name: str, op_text: str, value: str, now: float) -> Expr:
    field = FIELDS.get(name)
    if field is None:
        raise bad_request(1408, f"Field does not exist.: {name}"[:200])
    if not VALUE_CHARS.match(value):
        raise bad_request(1407)
    op = Op(op_text)
    if name in TIME_FIELDS:
        return _time_condition(field, op, value, now)
    if name == "group" and op is Op.EQ:
        return Condition(field, Op.IN_GROUP, value)
    if name in NUMERIC_FIELDS and op is not Op.CONTAINS:
        number = value.strip()
        if not number.isdigit():
            raise bad_request(1407)
        return Condition(field, op, int(number))
    return Condition(field, op, value)


def _time_condition(field: AgentField, op: Op, value: str, now: float) -> Expr:
    seconds = timeframe(value)
    if seconds is not None:
        # an age: `<1d` is newer than a day ago, `>7d` older than a week ago
        if op is Op.LT:
            return Condition(field, Op.GT, now - seconds)
        if op is Op.GT:
            return Condition(field, Op.LT, now - seconds)
        raise bad_request(1409)
    moment = date_value(value)
    if moment is None:
        raise bad_request(1412)
    if op in (Op.LT, Op.GT):
        return Condition(field, op, moment)
    if op is Op.EQ:
        return AllOf((Condition(field, Op.GT, moment - 1), Condition(field, Op.LT, moment + 86400)))
    raise bad_request(1409)


class _Parser:
    """q: OR of ANDs of terms; a term is `(q)` or `field op value`."""

    def __init__(self, text: str, now: float) -> None:
        self.text = text
        self.pos = 0
        self.now = now

    def parse(self) -> Expr:
        expr = self.any_of()
        if self.pos != len(self.text):
            raise bad_request(1407)
        return expr

    def any_of(self) -> Expr:
        parts = [self.all_of()]
        while self.peek(","):
            self.pos += 1
            parts.append(self.all_of())
        return parts[0] if len(parts) == 1 else AnyOf(tuple(parts))

    def all_of(self) -> Expr:
        parts = [self.term()]
        while self.peek(";"):
            self.pos += 1
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else AllOf(tuple(parts))

    def term(self) -> Expr:
        if self.peek("("):
            self.pos += 1
            inner = self.any_of()
            if not self.peek(")"):
                raise bad_request(1407)
            self.pos += 1
            return inner
        match = CONDITION.match(self.text, self.pos)
        if match is None or match.group(3) == "":
            raise bad_request(1407)
        self.pos = match.end()
        return condition(match.group(1), match.group(2), match.group(3), self.now)

    def peek(self, char: str) -> bool:
        return self.text.startswith(char, self.pos)


def parse_q(text: str, now: float) -> Expr:
    if len(text) > MAX_QUERY:
        raise bad_request(1407)
    return _Parser(text, now).parse()


def integer(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.param(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, "Bad Request", f"'{text[:40]}' is not of type 'integer' - '{name}'") from None
    if value < low:
        raise ApiError(400, "Bad Request", f"{value} is less than the minimum of {low} - '{name}'")
    if value > high:
        raise bad_request(1405) if name == "limit" else bad_request(1400)
    return value


def id_list(text: str) -> list[int]:
    ids = []
    for part in text.split(","):
        part = part.strip()
        if not part.isascii() or not part.isdigit() or len(part) > 10:
            raise ApiError(
                400, "Bad Request", f"'{part[:20]}' does not match '^[0-9]{{3,}}$' - 'agents_list'"
            )
        ids.append(int(part))
    return ids


def statuses(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",")]
    for value in values:
        if value not in STATUSES:
            raise ApiError(400, "Bad Request", f"'{value[:40]}' is not one of {list(STATUSES)} - 'status'")
    return values


def status_filter(text: str) -> Expr:
    return AnyOf(tuple(Condition(AgentField.STATUS, Op.EQ, s) for s in statuses(text)))


def normalised_version(text: str) -> str:
    """`4.4.0`, `v4.4.0` and `wazuh 4.4.0` all mean the column value `Wazuh v4.4.0`."""
    words = text.strip().lower().removeprefix("wazuh").strip().removeprefix("v")
    return f"Wazuh v{words}"


def older_than(seconds: float, now: float) -> Expr:
    threshold = now - seconds
    never = Condition(AgentField.STATUS, Op.EQ, ConnectionStatus.NEVER_CONNECTED.value)
    other = Condition(AgentField.STATUS, Op.NE, ConnectionStatus.NEVER_CONNECTED.value)
    return AnyOf(
        (
            AllOf((Condition(AgentField.LAST_KEEPALIVE, Op.LT, threshold), other)),
            AllOf((Condition(AgentField.DATE_ADD, Op.LT, threshold), never)),
        )
    )


def search(text: str) -> Expr:
    negate = text.startswith("-")
    value = text[1:] if negate else text
    if negate:
        return AllOf(tuple(Condition(field, Op.NOT_CONTAINS, value) for field in SEARCH_FIELDS))
    return AnyOf(tuple(Condition(field, Op.CONTAINS, value) for field in SEARCH_FIELDS))


def filters(request: Request, now: float) -> list[Expr]:
    """Every filter of the request but agents_list, as parts of one AND."""
    parts: list[Expr] = []
    status_text = request.param("status")
    if status_text:
        parts.append(status_filter(status_text))
    older = request.param("older_than")
    if older:
        seconds = timeframe(older)
        if seconds is None:
            raise bad_request(1411)
        if seconds > 0:
            parts.append(older_than(seconds, now))
    for param, field in FILTERS.items():
        value = request.param(param)
        if value is not None:
            parts.append(Condition(field, Op.EQ, value))
    version = request.param("version")
    if version:
        parts.append(Condition(AgentField.VERSION, Op.EQ, normalised_version(version)))
    group = request.param("group")
    if group:
        parts.append(Condition(AgentField.GROUP, Op.IN_GROUP, group))
    text = request.param("search")
    if text:
        parts.append(search(text))
    q = request.param("q")
    if q:
        parts.append(parse_q(q, now))
    return parts


def sort_keys(text: str | None) -> tuple[SortKey, ...]:
    if not text:
        return ()
    keys = []
    for part in text.split(","):
        part = part.strip()
        descending = part.startswith("-")
        name = part.lstrip("+-")
        field = FIELDS.get(name)
        if field is None:
            raise bad_request(1403, f"Not a valid sort field: {name[:40]}")
        keys.append(SortKey(field, descending))
    return tuple(keys)


def select_fields(text: str | None) -> frozenset[str] | None:
    if not text:
        return None
    names = frozenset(part.strip() for part in text.split(","))
    unknown = sorted(names - SELECTABLE)
    if unknown:
        raise bad_request(1724, f"Not a valid select field: {', '.join(n[:40] for n in unknown)}")
    return names


def select_fields_of(text: str | None, allowed: tuple[str, ...]) -> frozenset[str] | None:
    if not text:
        return None
    names = frozenset(part.strip() for part in text.split(","))
    unknown = sorted(names - set(allowed))
    if unknown:
        raise bad_request(1724, f"Not a valid select field: {', '.join(n[:40] for n in unknown)}")
    return names


@dataclass(frozen=True, slots=True)
class AgentsRequest:
    query: AgentQuery
    select: frozenset[str] | None
    ids: list[int] | None


def agents_request(request: Request, now: float, *, extra: tuple[Expr, ...] = ()) -> AgentsRequest:
    """GET /agents (and /groups/{id}/agents, which adds `extra`)."""
    if (request.param("distinct") or "false").lower() == "true":
        raise ApiError(400, "Bad Request", "distinct is not supported by agentpulse")
    limit = integer(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = integer(request, "offset", 0, 0, 2**31)
    listed = request.param("agents_list")
    ids = id_list(listed) if listed else None
    parts = [*filters(request, now), *extra]
    where = None if not parts else parts[0] if len(parts) == 1 else AllOf(tuple(parts))
    query = AgentQuery(
        where=where,
        sort=sort_keys(request.param("sort")),
        offset=offset,
        limit=limit,
        ids=tuple(ids) if ids is not None else None,
    )
    return AgentsRequest(query, select_fields(request.param("select")), ids)
