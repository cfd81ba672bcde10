"""Group rules every backend shares: the default group, group names, Wazuh's group hash."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

DEFAULT_GROUP = "default"
GROUP_HASH_SIZE = 8  # Wazuh's WDB_GROUP_HASH_SIZE: the first 8 hex digits of the SHA-1 of the group list
SYNC_STATUSES = ("synced", "syncreq", "syncreq_status", "syncreq_keepalive")


def group_hash(groups: Iterable[str]) -> str | None:
    """Wazuh's group_hash: SHA-1 of the comma-separated group list, first 8 hex digits; None for no group."""
    csv = ",".join(groups)
    return hashlib.sha1(csv.encode()).hexdigest()[:GROUP_HASH_SIZE] if csv else None
