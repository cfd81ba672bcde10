"""A query over agent rows, backend-neutral: which agents (a tree of conditions), in what order, which page.

The HTTP API builds it from Wazuh's `q`, `search`, `status`, ... parameters; `store/agentsql.py` turns it
into SQL in each backend's dialect with every value bound as a parameter, so no client text becomes SQL. Time conditions arrive as epoch seconds: turning "7d" into a threshold is the caller's business.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class AgentField(enum.StrEnum):
    """What a condition or a sort key may name: the agent columns of global.db (reference section 6.1)."""

    ID = "id"
    NAME = "name"
    IP = "ip"  # the last address heard, else the registration one
    REGISTER_IP = "register_ip"
    STATUS = "connection_status"
    STATUS_CODE = "status_code"
    LAST_KEEPALIVE = "last_keepalive"
    DATE_ADD = "date_add"
    DISCONNECTION_TIME = "disconnection_time"
    VERSION = "version"
    OS_NAME = "os_name"
    OS_VERSION = "os_version"
    OS_PLATFORM = "os_platform"
    OS_CODENAME = "os_codename"
    OS_MAJOR = "os_major"
    OS_MINOR = "os_minor"
    OS_UNAME = "os_uname"
    OS_ARCH = "os_arch"
    OS_BUILD = "os_build"
    GROUP = "group"
    CONFIG_SUM = "config_sum"
    MERGED_SUM = "merged_sum"
    MANAGER = "manager_host"
    NODE_NAME = "node_name"
    GROUP_CONFIG_STATUS = "group_config_status"


class Op(enum.StrEnum):
    EQ = "="
    NE = "!="
    LT = "<"
    GT = ">"
    CONTAINS = "~"  # substring, case-insensitive (Wazuh's LIKE '%v%')
    NOT_CONTAINS = "!~"
    IN_GROUP = "in_group"  # the value is one of the comma-separated groups


Value = str | int | float


@dataclass(frozen=True, slots=True)
class Condition:
    field: AgentField
    op: Op
    value: Value


@dataclass(frozen=True, slots=True)
class AllOf:
    parts: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    parts: tuple[Expr, ...]


Expr = Condition | AllOf | AnyOf


@dataclass(frozen=True, slots=True)
class SortKey:
    field: AgentField
    descending: bool = False


@dataclass(frozen=True, slots=True)
class AgentQuery:
    """Agents matching `where` (all when None), sorted (then by id), `limit` of them (None: all) from
    `offset`."""

    where: Expr | None = None
    sort: tuple[SortKey, ...] = ()
    offset: int = 0
    limit: int | None = 500
    ids: tuple[int, ...] | None = field(default=None)  # only these agents (Wazuh's agents_list)


class Format(enum.Enum):
    """How a column becomes a JSON value in `Output` (NULL is always left out)."""

    VALUE = enum.auto()  # as stored
    PADDED_ID = enum.auto()  # "001"
    UTC_TIME = enum.auto()  # epoch seconds as "2026-01-23T13:57:11+00:00"
    UTC_TIME_UNLESS_ZERO = enum.auto()  # the same, left out when 0
    LIST = enum.auto()  # comma-separated text as a list


@dataclass(frozen=True, slots=True)
class Output:
    """One member of the JSON object a backend builds per agent (`Reader.agents_json`): `key` at the top,
    or inside the object `within` (left out when all its members are NULL)."""

    key: str
    field: AgentField
    format: Format = Format.VALUE
    within: str | None = None


@dataclass(frozen=True, slots=True)
class JsonPage:
    """One page as JSON objects already encoded by the backend (no Python object per row), and the
    match count."""

    total: int
    items: list[str]


@dataclass(frozen=True, slots=True)
class AgentPage:
    """One page of rows (dicts without their NULL columns, internal_key left out) and the match count."""

    total: int
    rows: list[dict[str, object]]


@dataclass(frozen=True, slots=True)
class StatusChange:
    """One row of an agent's status history."""

    seq: int
    from_status: str
    to_status: str
    code: int
    at: float
