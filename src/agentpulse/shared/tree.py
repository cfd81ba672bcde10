"""`SharedTree`: the groups' folders and their `merged.mg`, rebuilt when their files change (reference 15.2).

Groups are the sub-directories of `etc/shared/`; a multi-group (`default,web`) is merged into
`var/multigroups/<sha256[:8]>/merged.mg`. A scan stats every file (cheap) and re-merges only a group whose
files were added, removed or touched, or whose `merged.mg` went missing or was edited from outside; a
multi-group is re-merged when a member changed. A merged.mg is rewritten only when its bytes differ. The
md5 of each is kept (`Merged`). Blocking file I/O: run `scan` off the event loop, one at a time.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agentpulse.shared.merge import (
    MergeAbandoned,
    SharedEntry,
    build_merged,
    md5_hex,
    multigroup_entries,
    read_group_files,
    skipped,
)
from agentpulse.shared.names import (
    AGENT_CONF,
    AR_CONF,
    DEFAULT_GROUP,
    MULTIGROUP_SEPARATOR,
    SHARED_FILE,
    check_group,
    multigroup_hash,
    split_groups,
    valid_group,
)

log = logging.getLogger(__name__)

# etc/shared/default/agent.conf as Wazuh installs it: 76 bytes, md5 ab73af41699f13fdd81903b5f23d8d00,
# an agent_config with no settings. A new group gets the same.
STOCK_AGENT_CONF: Final = b"<agent_config>\n\n  <!-- Shared agent configuration here -->\n\n</agent_config>\n"
DIR_MODE: Final = 0o770
FILE_MODE: Final = 0o660

Signature = tuple[tuple[str, int, int], ...]  # (relative path, size, mtime_ns) of every file considered


@dataclass(frozen=True, slots=True)
class Merged:
    """The merged.mg of a group (key: its name) or multi-group (key: its CSV)."""

    key: str
    md5: str
    path: Path
    size: int


@dataclass(frozen=True, slots=True)
class GroupFile:
    name: str
    size: int
    md5: str


class SharedTree:
    def __init__(self, shared_dir: Path, multigroups_dir: Path, *, merge: bool = True) -> None:
        self.shared_dir = shared_dir
        self.multigroups_dir = multigroups_dir
        self.merge = merge  # remoted.merge_shared: 0 only hashes an existing merged.mg
        self._signatures: dict[str, Signature] = {}  # group -> its files when last merged
        self._written: dict[str, tuple[int, int]] = {}  # key -> (size, mtime_ns) of the merged.mg we wrote
        self._merged: dict[str, Merged] = {}
        self._binary_seen: set[Path] = set()

    # -- layout -------------------------------------------------------------------------------------------

    def group_dir(self, group: str) -> Path:
        return self.shared_dir / check_group(group)

    def merged_path(self, key: str) -> Path:
        if MULTIGROUP_SEPARATOR in key:
            split_groups(key)
            return self.multigroups_dir / multigroup_hash(key) / SHARED_FILE
        return self.group_dir(key) / SHARED_FILE

    def create_group(self, group: str) -> bool:
        """The group's folder with the stock agent.conf; False when it existed already."""
        directory = self.group_dir(group)
        if directory.is_dir():
            return False
        directory.mkdir(parents=True, mode=DIR_MODE, exist_ok=True)
        _write_file(directory / AGENT_CONF, STOCK_AGENT_CONF)
        return True

    def ensure_default(self) -> None:
        self.multigroups_dir.mkdir(parents=True, mode=DIR_MODE, exist_ok=True)
        self.create_group(DEFAULT_GROUP)

    def groups(self) -> list[str]:
        try:
            names = sorted(os.listdir(self.shared_dir))
        except FileNotFoundError:
            return []
        return [name for name in names if valid_group(name) and (self.shared_dir / name).is_dir()]

    def files(self, group: str) -> list[GroupFile]:
        """`agentpulse group files`: what a merge of the group takes, with each file's md5."""
        return [
            GroupFile(entry.name, len(entry.data), md5_hex(entry.data))
            for entry in read_group_files(self.group_dir(group), self._binary_seen)
        ]

    # -- scanning -----------------------------------------------------------------------------------------

    def current(self) -> dict[str, Merged]:
        return dict(self._merged)

    def scan(self, multigroups: Iterable[str] = ()) -> dict[str, Merged]:
        """Re-merge what changed; returns every group's and multi-group's merged.mg (a new dict)."""
        ar_conf = self._ar_conf()
        ar_signature = _signature_of_file(self.shared_dir / AR_CONF)
        changed: set[str] = set()
        merged: dict[str, Merged] = {}
        for group in self.groups():
            signature = _signature(self.group_dir(group)) + ar_signature
            if signature != self._signatures.get(group) or self._outside_edit(group):
                result = self._merge_group(group, ar_conf)
                if result is None:
                    continue
                self._signatures[group] = signature
                changed.add(group)
            else:
                result = self._merged[group]
            merged[group] = result
        for group in set(self._signatures) - set(merged):
            del self._signatures[group]
        wanted = set()
        for csv in multigroups:
            try:
                members = split_groups(csv)
            except ValueError:
                continue
            if len(members) < 2:
                continue
            wanted.add(csv)
            previous = self._merged.get(csv)
            if previous is None or changed.intersection(members) or self._outside_edit(csv):
                result = self._merge_multigroup(csv, members, merged, ar_conf)
            else:
                result = previous
            if result is not None:
                merged[csv] = result
        self._remove_unused_multigroups(wanted)
        self._merged = merged
        return dict(merged)

    def _ar_conf(self) -> bytes | None:
        try:
            return (self.shared_dir / AR_CONF).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return None

    def _outside_edit(self, key: str) -> bool:
        """Its merged.mg is not the one this tree wrote (deleted, or edited by someone)."""
        written = self._written.get(key)
        if written is None:
            return True
        try:
            stat = self.merged_path(key).stat()
        except FileNotFoundError:
            return True
        return (stat.st_size, stat.st_mtime_ns) != written

    def _merge_group(self, group: str, ar_conf: bytes | None) -> Merged | None:
        try:
            entries = read_group_files(self.group_dir(group), self._binary_seen)
        except MergeAbandoned as error:
            log.warning("Group '%s': merge abandoned (%s); retried at the next scan", group, error)
            return None
        return self._store(group, group, entries, ar_conf)

    def _merge_multigroup(
        self, csv: str, members: tuple[str, ...], merged: dict[str, Merged], ar_conf: bytes | None
    ) -> Merged | None:
        parts: list[tuple[str, list[SharedEntry]]] = []
        for group in members:
            if group not in merged:
                continue  # a member without a folder adds nothing (copy_directory warns and goes on)
            try:
                parts.append((group, read_group_files(self.group_dir(group), self._binary_seen)))
            except MergeAbandoned as error:
                log.warning("Multi-group '%s': merge abandoned (%s)", csv, error)
                return None
        return self._store(csv, multigroup_hash(csv), multigroup_entries(parts), ar_conf)

    def _store(self, key: str, header: str, entries: list[SharedEntry], ar_conf: bytes | None) -> Merged:
        path = self.merged_path(key)
        if self.merge:
            data = build_merged(header, entries, ar_conf)
            digest = md5_hex(data)
            if _file_md5(path) != digest:
                path.parent.mkdir(parents=True, mode=DIR_MODE, exist_ok=True)
                _write_file(path, data)
                log.info("Shared files of '%s' merged: %s (%d bytes)", key, digest, len(data))
        existing = path.read_bytes() if path.exists() else b""
        stat = path.stat() if path.exists() else None
        self._written[key] = (stat.st_size, stat.st_mtime_ns) if stat else (-1, -1)
        return Merged(key, md5_hex(existing), path, len(existing))

    def _remove_unused_multigroups(self, wanted: set[str]) -> None:
        keep = {multigroup_hash(csv) for csv in wanted}
        for csv in [key for key in self._written if MULTIGROUP_SEPARATOR in key and key not in wanted]:
            del self._written[csv]
        try:
            names = os.listdir(self.multigroups_dir)
        except FileNotFoundError:
            return
        for name in names:
            directory = self.multigroups_dir / name
            if name in keep or not directory.is_dir():
                continue
            # Only what a merge leaves there (merged.mg): anything else is not ours to delete.
            if all(entry.startswith(SHARED_FILE) for entry in os.listdir(directory)):
                shutil.rmtree(directory, ignore_errors=True)


def _signature(directory: Path) -> Signature:
    found: list[tuple[str, int, int]] = []
    _collect(directory, "", found)
    return tuple(found)


def _collect(directory: Path, prefix: str, found: list[tuple[str, int, int]]) -> None:
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: os.fsencode(entry.name))
    except (FileNotFoundError, NotADirectoryError):
        return
    for entry in entries:
        if skipped(entry.name):
            continue
        try:
            if entry.is_dir():
                _collect(Path(entry.path), f"{prefix}{entry.name}/", found)
            elif entry.is_file():
                stat = entry.stat()
                found.append((prefix + entry.name, stat.st_size, stat.st_mtime_ns))
        except FileNotFoundError:
            continue


def _signature_of_file(path: Path) -> Signature:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return ()
    return ((f"/{path.name}", stat.st_size, stat.st_mtime_ns),)


def _file_md5(path: Path) -> str | None:
    try:
        return md5_hex(path.read_bytes())
    except FileNotFoundError:
        return None


def _write_file(path: Path, data: bytes) -> None:
    """Write through a `merged.mg.tmp`-style name (skipped by every scan) and rename: readers (a push in
    progress) see the old file or the new one, never half of one."""
    tmp = path.with_name(f"{SHARED_FILE}.tmp.{path.name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
