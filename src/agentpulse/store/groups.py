"""Group rules every backend shares: the default group, Wazuh's group hash, the sync-status words.

The values are wazuh-db's (`default`, the 8-hex-digit SHA-256 `group_hash`, the words of the `sync_status`
and `group_config_status` columns), so tooling written for wazuh-db reads our rows unchanged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from agentpulse.store.batch import GroupMode

DEFAULT_GROUP = "default"
GROUP_HASH_SIZE = 8  # Wazuh's WDB_GROUP_HASH_SIZE: the first 8 hex digits of the SHA-256 of the group list
SYNC_STATUSES = ("synced", "syncreq", "syncreq_status", "syncreq_keepalive")
CONFIG_SYNCED = "synced"  # group_config_status: the agent reported its group's merged.mg md5
CONFIG_NOT_SYNCED = "not synced"
CONFIG_STATUSES = (CONFIG_SYNCED, CONFIG_NOT_SYNCED)


def group_hash(groups: Iterable[str]) -> str | None:
    """Wazuh's group_hash (`OS_SHA256_String_sized`): SHA-256 of the comma-separated group list, first 8 hex
    digits, the name of the multi-group's folder too (`default,web` -> 5288d400); None for no group."""
    csv = ",".join(groups)
    return hashlib.sha256(csv.encode()).hexdigest()[:GROUP_HASH_SIZE] if csv else None


def regrouped(current: list[str], wanted: list[str], mode: GroupMode) -> list[str] | None:
    """An agent's groups after a SET in this mode; None when the mode leaves them as they are."""
    match mode:
        case GroupMode.APPEND:
            return current + [name for name in wanted if name not in current]
        case GroupMode.EMPTY_ONLY:
            return None if current else wanted
        case GroupMode.REMOVE:
            return [name for name in current if name not in wanted]
        case GroupMode.OVERRIDE:
            return wanted
    raise AssertionError(mode)  # pragma: no cover
