"""The agent item of Wazuh's API (reference section 16.2): each field, the column behind it, its JSON form.

A row from the store (NULL columns absent) becomes an item with NULLs absent too, epochs as ISO 8601 UTC
with `+00:00`, `os` as an object, `group` as a list and `disconnection_time` only when not 0.
"""

from __future__ import annotations

import datetime
from typing import Any, Final

from agentpulse.store.agentquery import AgentField as F

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


def iso_time(epoch: float) -> str:
    moment = datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
    return moment.isoformat()


def _selected(name: str, select: frozenset[str] | None) -> bool:
    if select is None or name == "id" or name in select:
        return True
    return name.startswith("os.") and "os" in select


def item(row: dict[str, Any], select: frozenset[str] | None = None) -> dict[str, Any]:
    """The Wazuh item of one agent row, limited to `select` (API names; `id` always) when given."""
    out: dict[str, Any] = {}
    os_part: dict[str, Any] = {}
    for name, column in FIELDS.items():
        if not _selected(name, select):
            continue
        key = "ip" if column is F.IP else column.value
        value = row.get(key)
        if column is F.IP and value is None:
            value = row.get("register_ip")
        if value is None:
            continue
        if name == "id":
            out["id"] = f"{int(value):03d}"
        elif name in TIME_FIELDS:
            if name == "disconnection_time" and not value:
                continue
            out[name] = iso_time(float(value))
        elif name == "group":
            out["group"] = [g for g in str(value).split(",") if g]
        elif name.startswith("os."):
            os_part[name[3:]] = value
        else:
            out[name] = value
    if os_part:
        out["os"] = os_part
    return out
