"""The names that become paths: group names, file names inside a group, multi-group hashes.

The danger is path traversal: a group name comes from an operator or the query socket, a file name from
an agent push or an archive, and each ends up joined to a directory. Everything here refuses `..`, `/`,
NUL and hidden names before any path is built.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

SHARED_FILE: Final = "merged.mg"  # SHAREDCFG_FILENAME
AGENT_CONF: Final = "agent.conf"
AR_CONF: Final = "ar.conf"  # DEFAULTAR_FILE, etc/shared/ar.conf, merged into every group when present
DEFAULT_GROUP: Final = "default"
MULTIGROUP_SEPARATOR: Final = ","
GROUP_HASH_SIZE: Final = 8  # WDB_GROUP_HASH_SIZE: hex digits of the SHA-256 of the group list
GROUP_NAME_MAX: Final = 255
# Wazuh's group-name rule (w_validate_group_name): letters, digits, '_', '-' and '.'; not '.' or '..'.
_GROUP_NAME: Final = re.compile(r"^[A-Za-z0-9_.\-]{1,255}$")
_RESERVED: Final = (".", "..")


class BadName(ValueError):
    """A group or file name that would leave its directory (or is not allowed for another reason)."""


def valid_group(name: str) -> bool:
    return bool(_GROUP_NAME.match(name)) and name not in _RESERVED


def check_group(name: str) -> str:
    if not valid_group(name):
        raise BadName(f"invalid group name {name[:64]!r}: letters, digits, '_', '-' and '.' only")
    return name


def split_groups(csv: str) -> tuple[str, ...]:
    """`default,web` -> ('default', 'web'); BadName when any member is not a valid group name."""
    groups = tuple(csv.split(MULTIGROUP_SEPARATOR))
    for group in groups:
        check_group(group)
    return groups


def multigroup_hash(csv: str) -> str:
    """The directory name of a multi-group: the first 8 hex digits of sha256(csv) (`default,web` -> 5288d400)."""
    return hashlib.sha256(csv.encode()).hexdigest()[:GROUP_HASH_SIZE]


def check_relative(path: str) -> str:
    """A relative file path inside a group (`agent.conf`, `sub/x.txt`): no NUL, no absolute path, no `..`
    part, no empty or hidden part. Returns it unchanged, or raises BadName."""
    if not path or "\0" in path or path.startswith("/") or "\\" in path:
        raise BadName(f"invalid file name {path[:64]!r}")
    for part in path.split("/"):
        if part in ("", ".", "..") or part.startswith("."):
            raise BadName(f"invalid file name {path[:64]!r}")
    return path
