"""What the agent says about its machine in every keep-alive: the uname line and the shared-file sums.

The uname line is Wazuh's `getuname()` on Unix, built once at start (`this_machine`). The md5 sums of the
shared files can change while the agent runs, so `shared_sums()` reads them for each keep-alive; it blocks
(file reads), so the daemon runs it off the event loop.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from agentpulse.paths import Home

AGENT_NAME: Final = "Wazuh"
AGENT_VERSION: Final = "v4.14.7"  # __ossec_version: the startup JSON and the keep-alive both use it
VERSION_TEXT: Final = f"{AGENT_NAME} {AGENT_VERSION}"
OS_RELEASE: Final = Path("/etc/os-release")
SHARED_DIR: Final = "shared"  # etc/shared, where the manager's pushed files land
MERGED_FILE: Final = "merged.mg"
AGENT_CONF_FILE: Final = "agent.conf"


class UnameResult(Protocol):
    @property
    def sysname(self) -> str: ...
    @property
    def nodename(self) -> str: ...
    @property
    def release(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def machine(self) -> str: ...


@dataclass(frozen=True, slots=True)
class OsInfo:
    name: str  # NAME, e.g. "Debian GNU/Linux"
    platform: str  # ID, e.g. "debian"
    version: str  # VERSION, e.g. "12 (bookworm)", or VERSION_ID with the codename


def parse_os_release(text: str) -> dict[str, str]:
    """`KEY=value` lines with shell quoting, comments and blank lines skipped."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            words = shlex.split(raw)
        except ValueError:
            words = [raw.strip("\"'")]
        fields[key.strip()] = " ".join(words)
    return fields


def os_info_from_release(fields: dict[str, str]) -> OsInfo | None:
    """NAME, ID and VERSION (or VERSION_ID plus ` (<VERSION_CODENAME>)`); None when one is missing."""
    name, platform = fields.get("NAME", ""), fields.get("ID", "")
    version = fields.get("VERSION", "")
    if not version and fields.get("VERSION_ID"):
        version = fields["VERSION_ID"]
        if fields.get("VERSION_CODENAME"):
            version += f" ({fields['VERSION_CODENAME']})"
    if not (name and platform and version):
        return None
    return OsInfo(name, platform, version)


def read_os_info(path: Path = OS_RELEASE) -> OsInfo | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return os_info_from_release(parse_os_release(text))


def _clean(text: str) -> str:
    """One line: the keep-alive is line-based, so a newline in a field would split it."""
    return " ".join(text.splitlines())


def uname_line(uname: UnameResult, os_info: OsInfo | None) -> str:
    """`getuname()`: the first line of the keep-alive, before the optional ` / <agent.conf md5>`."""
    parts = [_clean(part) for part in (uname.sysname, uname.nodename, uname.release, uname.version)]
    machine = _clean(uname.machine)
    if os_info is None:
        return f"{' '.join(parts)} {machine} - {VERSION_TEXT}"
    bracket = f"[{_clean(os_info.name)}|{_clean(os_info.platform)}: {_clean(os_info.version)}]"
    return f"{' |'.join(parts)} |{machine} {bracket} - {VERSION_TEXT}"


def this_machine(os_release: Path = OS_RELEASE) -> str:
    """The uname line of the machine we run on.

    `os.uname()` plus the OS name, platform and version from `/etc/os-release`, or the bare fallback when
    that file says too little.
    """
    return uname_line(os.uname(), read_os_info(os_release))


@dataclass(frozen=True, slots=True)
class SharedSums:
    merged_sum: str | None  # None: no merged.mg, the keep-alive says "x merged.mg"
    config_sum: str | None  # None: no agent.conf, the uname line has no " / <md5>"


def _md5() -> hashlib._Hash:
    return hashlib.md5(usedforsecurity=False)


def file_md5(path: Path) -> str | None:
    try:
        with open(path, "rb") as file:
            return hashlib.file_digest(file, _md5).hexdigest()
    except OSError:
        return None


def shared_sums(home: Home) -> SharedSums:
    """md5 of etc/shared/merged.mg and etc/shared/agent.conf as they are now. Blocking.

    Read for each keep-alive: the manager pushes shared files, so the sums can change while the agent runs.
    """
    shared = home.etc / SHARED_DIR
    return SharedSums(file_md5(shared / MERGED_FILE), file_md5(shared / AGENT_CONF_FILE))
