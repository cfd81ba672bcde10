"""File modes of a manager home: the umask the manager runs with, and the check of the files holding keys.

client.keys holds every agent's key, global.db (and its -wal and -shm files) holds them again in
`internal_key`, and ossec.conf or the NATS credential files may hold passwords: none of them is for other
users to read. What the manager creates is 0640 (directories 0750) under MANAGER_UMASK; a file that
exists already keeps its mode (the operator's choice), but a world-readable one is named at start.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["MANAGER_UMASK", "Exposed", "set_manager_umask", "world_readable"]

MANAGER_UMASK: Final = 0o027  # files 0640, directories 0750: the manager's group may read, others not


def set_manager_umask() -> int:
    """Apply MANAGER_UMASK to this process (and the workers it starts); returns the previous one."""
    return os.umask(MANAGER_UMASK)


@dataclass(frozen=True, slots=True)
class Exposed:
    path: Path
    mode: int  # the permission bits, e.g. 0o644

    def warning(self) -> str:
        return (
            f"{self.path} is readable by every user (mode {self.mode:04o}) and holds keys or passwords: "
            f"chmod o-rwx {self.path}"
        )


def world_readable(paths: Iterable[Path]) -> list[Exposed]:
    """The files among `paths` that exist and that any user may read (missing ones are skipped)."""
    exposed: list[Exposed] = []
    for path in paths:
        try:
            mode = path.stat().st_mode
        except OSError:
            continue
        if mode & stat.S_IROTH:
            exposed.append(Exposed(path, stat.S_IMODE(mode)))
    return exposed
