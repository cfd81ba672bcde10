"""File modes: the manager's umask, and which existing files are world-readable."""

from __future__ import annotations

import os
from pathlib import Path

from agentpulse import filemodes


def test_world_readable_names_the_files_others_may_read_and_skips_missing_ones(tmp_path: Path) -> None:
    open_file, group_file = tmp_path / "client.keys", tmp_path / "global.db"
    open_file.write_text("x")
    group_file.write_text("x")
    os.chmod(open_file, 0o644)
    os.chmod(group_file, 0o640)
    exposed = filemodes.world_readable([open_file, group_file, tmp_path / "missing"])
    assert exposed == [filemodes.Exposed(open_file, 0o644)]
    assert exposed[0].warning() == (
        f"{open_file} is readable by every user (mode 0644) and holds keys or passwords: chmod o-rwx {open_file}"
    )


def test_the_manager_umask_makes_new_files_0640(tmp_path: Path) -> None:
    previous = filemodes.set_manager_umask()
    try:
        path = tmp_path / "new"
        path.write_text("x")
        directory = tmp_path / "dir"
        directory.mkdir()
    finally:
        os.umask(previous)
    assert (path.stat().st_mode & 0o777, directory.stat().st_mode & 0o777) == (0o640, 0o750)
