"""The agent item of Wazuh's API (reference section 16.2): each field, the column behind it, its JSON form.

A row from the store (NULL columns absent) becomes an item with NULLs absent too, epochs as ISO 8601 UTC
with `+00:00`, `os` as an object, `group` as a list and `disconnection_time` only when not 0.
"""

from __future__ import annotations

import datetime
import enum
import functools
from typing import Any, Final

from agentpulse.store.agentquery import AgentField as F
from agentpulse.store.agentquery import Format, Output

# API field -> column. `os.*` are the nested fields; `os` alone selects them all.
FIELDS: Final[dict[str, F]] = {
    "id": F.ID,
    "name": F.NAME,
    "ip": F.IP,
    "registerIP": F.REGISTER_IP,
    "status": F.STATUS,
    "status_code": F.STATUS_CODE,
    "lastKeepAlive": F.LAST_KEEPALIVE,
    "dateAdd": F.DATE_ADD,
    "disconnection_time": F.DISCONNECTION_TIME,
    "version": F.VERSION,
    "os.name": F.OS_NAME,
    "os.version": F.OS_VERSION,
    "os.platform": F.OS_PLATFORM,
    "os.codename": F.OS_CODENAME,
    "os.major": F.OS_MAJOR,
    "os.minor": F.OS_MINOR,
    "os.uname": F.OS_UNAME,
    "os.arch": F.OS_ARCH,
    "os.build": F.OS_BUILD,
    "group": F.GROUP,
    "configSum": F.CONFIG_SUM,
    "mergedSum": F.MERGED_SUM,
    "manager": F.MANAGER,
    "node_name": F.NODE_NAME,
    "group_config_status": F.GROUP_CONFIG_STATUS,
}
TIME_FIELDS: Final = frozenset({"lastKeepAlive", "dateAdd", "disconnection_time"})
NUMERIC_FIELDS: Final = frozenset({"id", "status_code", *TIME_FIELDS})
OS_FIELDS: Final = tuple(name for name in FIELDS if name.startswith("os."))
SELECTABLE: Final = frozenset({*FIELDS, "os"})


@functools.lru_cache(maxsize=65536)
def iso_time(epoch: float) -> str:
    """`2024-02-14T10:32:57+00:00` (whole seconds; many agents share a second, so it is cached)."""
    moment = datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
    return moment.isoformat()


class Kind(enum.Enum):
    PLAIN = enum.auto()
    ID = enum.auto()
    TIME = enum.auto()
    DISCONNECTION = enum.auto()  # a time, left out when 0
    GROUPS = enum.auto()
    OS = enum.auto()


def _kind(name: str) -> Kind:
    if name == "id":
        return Kind.ID
    if name == "disconnection_time":
        return Kind.DISCONNECTION
    if name in TIME_FIELDS:
        return Kind.TIME
    if name == "group":
        return Kind.GROUPS
    return Kind.OS if name.startswith("os.") else Kind.PLAIN


def _selected(name: str, select: frozenset[str] | None) -> bool:
    if select is None or name == "id" or name in select:
        return True
    return name.startswith("os.") and "os" in select


@functools.lru_cache(maxsize=256)
def plan(select: frozenset[str] | None) -> tuple[tuple[str, str, Kind], ...]:
    """(item key, row column, kind) of every field `select` asks for (`id` always): worked out once."""
    steps = []
    for name, column in FIELDS.items():
        wanted = (
            select is None or name == "id" or name in select or (name.startswith("os.") and "os" in select)
        )
        if wanted:
            key = name[3:] if name.startswith("os.") else name
            steps.append((key, "ip" if column is F.IP else column.value, _kind(name)))
    return tuple(steps)


_FORMATS: Final = {
    Kind.PLAIN: Format.VALUE,
    Kind.OS: Format.VALUE,
    Kind.ID: Format.PADDED_ID,
    Kind.TIME: Format.UTC_TIME,
    Kind.DISCONNECTION: Format.UTC_TIME_UNLESS_ZERO,
    Kind.GROUPS: Format.LIST,
}


@functools.lru_cache(maxsize=256)
def outputs(select: frozenset[str] | None) -> tuple[Output, ...]:
    """The item as the store's backend builds it in JSON (`Reader.agents_json`): same members, same order
    and same forms as `item()`."""
    built = []
    for name, column in FIELDS.items():
        if _selected(name, select):
            kind = _kind(name)
            key, within = (name[3:], "os") if kind is Kind.OS else (name, None)
            built.append(Output(key, column, _FORMATS[kind], within))
    return tuple(built)


def item(row: dict[str, Any], select: frozenset[str] | None = None) -> dict[str, Any]:
    """The Wazuh item of one agent row, limited to `select` (API names; `id` always) when given."""
    out: dict[str, Any] = {}
    os_part: dict[str, Any] = {}
    for key, column, kind in plan(select):
        value = row.get(column)
        if value is None:
            if column == "ip":
                value = row.get("register_ip")
            if value is None:
                continue
        if kind is Kind.PLAIN:
            out[key] = value
        elif kind is Kind.ID:
            out[key] = f"{int(value):03d}"
        elif kind is Kind.TIME:
            out[key] = iso_time(value)
        elif kind is Kind.OS:
            os_part[key] = value
        elif kind is Kind.GROUPS:
            out[key] = [g for g in str(value).split(",") if g]
        elif value:
            out[key] = iso_time(value)
    if os_part:
        out["os"] = os_part
    return out
