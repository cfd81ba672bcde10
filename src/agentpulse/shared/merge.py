"""The `merged.mg` format (reference 15.1): build one from files, read one back (the agent's unmerge).

`#<group>\\n`, then for each file `!<size> <relative path>\\n` and exactly `<size>` raw bytes, no separator
(`MergeAppendFile`). Files are taken recursively in `strcmp` order at each level, skipping hidden names,
names starting with `merged.mg`, and "binary" files (a NUL byte, `checkBinaryFile`). The danger on the
reading side is an archive that names `../x`: `unmerge` refuses every name `names.check_relative` refuses.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agentpulse.shared.names import AGENT_CONF, SHARED_FILE, BadName, check_relative

log = logging.getLogger(__name__)

CHUNK_SIZE: Final = 900  # send_file_toagent(): fread(buf, 1, 900)
_CONTROL: Final = b"#!-"  # a chunk must never start with it (a Wazuh agent would take it for control)


@dataclass(frozen=True, slots=True)
class SharedEntry:
    """One file of a group: its path relative to the group directory and its bytes."""

    name: str
    data: bytes


class MergeAbandoned(Exception):
    """A file changed size while it was read (Wazuh abandons the merge too); the next scan retries."""


def skipped(name: str) -> bool:
    """Hidden names and `merged.mg*` are never part of a merge (at any level)."""
    return name.startswith(".") or name.startswith(SHARED_FILE)


def is_binary(data: bytes) -> bool:
    return b"\0" in data


def read_group_files(directory: Path, binary_seen: set[Path] | None = None) -> list[SharedEntry]:
    """Every file of a group directory, recursively, in Wazuh's order (`wreaddir` sorts each level).

    Binary files are left out with one log line per path (`binary_seen` remembers which were logged).
    Raises MergeAbandoned when a file's size changed between its stat and its read.
    """
    entries: list[SharedEntry] = []
    for relative, path in _walk(directory, ""):
        try:
            size = path.stat().st_size
            data = path.read_bytes()
        except FileNotFoundError:
            continue  # removed meanwhile: the next scan sees the directory as it is then
        if len(data) != size:
            raise MergeAbandoned(f"{path} changed while it was read")
        if is_binary(data):
            if binary_seen is None or path not in binary_seen:
                log.error("Invalid shared file '%s'. Ignoring it.", path)
                if binary_seen is not None:
                    binary_seen.add(path)
            continue
        if binary_seen is not None:
            binary_seen.discard(path)
        if not data:
            log.warning("Shared file '%s' is empty", path)
        entries.append(SharedEntry(relative, data))
    return entries


def _walk(directory: Path, prefix: str) -> Iterator[tuple[str, Path]]:
    try:
        names = sorted(os.listdir(directory), key=os.fsencode)  # strcmp order: bytes, not locale
    except (FileNotFoundError, NotADirectoryError):
        return
    for name in names:
        if skipped(name):
            continue
        path = directory / name
        if path.is_symlink() and not path.exists():
            continue
        if path.is_dir():
            yield from _walk(path, f"{prefix}{name}/")
        elif path.is_file():
            yield f"{prefix}{name}", path


def build_merged(header: str, entries: list[SharedEntry], ar_conf: bytes | None = None) -> bytes:
    """The bytes of a merged.mg: `#<header>`, ar.conf when given, then the entries in the order given."""
    parts = [f"#{header}\n".encode()]
    if ar_conf is not None:
        parts += [f"!{len(ar_conf)} ar.conf\n".encode(), ar_conf]
    for entry in entries:
        parts += [f"!{len(entry.data)} {entry.name}\n".encode(), entry.data]
    return b"".join(parts)


def multigroup_entries(groups: list[tuple[str, list[SharedEntry]]]) -> list[SharedEntry]:
    """`c_multi_group()`: the member groups' files in CSV order into one directory. Each `agent.conf` is
    appended after `<!-- Source file: <group>/agent.conf -->\\n`; any other file of the same path is
    overwritten by the later group. Returned in the order a merge of that directory reads them."""
    files: dict[str, bytes] = {}
    for group, entries in groups:
        for entry in entries:
            if entry.name == AGENT_CONF:
                source = f"<!-- Source file: {group}/{AGENT_CONF} -->\n".encode()
                files[entry.name] = files.get(entry.name, b"") + source + entry.data
            else:
                files[entry.name] = entry.data
    return [SharedEntry(name, files[name]) for name in sorted(files, key=_tree_order)]


def _tree_order(name: str) -> tuple[bytes, ...]:
    # wreaddir lists one level sorted; a sub-directory's files come at the directory's place. Comparing
    # the paths part by part gives exactly that order (`a/b` before `a-c`, though '-' < '/').
    return tuple(os.fsencode(part) for part in name.split("/"))


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def chunks(data: bytes, size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The file as push messages of at most `size` bytes, none starting with `#!-`.

    Wazuh cuts every 900 bytes, and a Wazuh agent takes a chunk that happens to begin with `#!-` for a
    control message and cuts the file short (reference 15.5, caveat). The agent appends chunks as they
    come, so their lengths are free: such a chunk starts one byte earlier instead (`#!-` cannot overlap
    itself, so one byte is always enough). The file the agent writes is the same bytes.
    """
    offset, end = 0, len(data)
    while offset < end:
        stop = min(offset + size, end)
        if stop < end and data.startswith(_CONTROL, stop):
            stop -= 1
        yield data[offset:stop]
        offset = stop


def unmerge(data: bytes) -> list[SharedEntry]:
    """The files of a merged.mg (`UnmergeFiles()`): lines not starting with `!` are skipped (the `#group`
    line); each `!<size> <name>` is followed by `<size>` bytes. Raises BadName for a name that would leave
    the directory and ValueError for a malformed archive (a size past the end, a header without a name)."""
    entries: list[SharedEntry] = []
    offset, end = 0, len(data)
    while offset < end:
        newline = data.find(b"\n", offset)
        line_end = end if newline < 0 else newline
        line = data[offset:line_end]
        offset = line_end + 1
        if not line.startswith(b"!"):
            continue
        size_text, _, raw_name = line[1:].partition(b" ")
        if not size_text.isdigit() or not raw_name:
            raise ValueError(f"malformed merged.mg header {line[:64]!r}")
        size = int(size_text)
        if offset + size > end:
            raise ValueError(f"merged.mg entry {raw_name[:64]!r} runs past the end")
        name = raw_name.decode("utf-8", errors="replace")
        check_relative(name)
        entries.append(SharedEntry(name, data[offset : offset + size]))
        offset += size
    return entries


__all__ = [
    "CHUNK_SIZE",
    "BadName",
    "MergeAbandoned",
    "SharedEntry",
    "build_merged",
    "chunks",
    "md5_hex",
    "multigroup_entries",
    "read_group_files",
    "unmerge",
]
