"""merged.mg byte for byte (reference 15.1 and the worked example 15.7), multi-groups, chunks, unmerge."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from agentpulse.shared.merge import SharedEntry, build_merged, chunks, md5_hex, read_group_files, unmerge
from agentpulse.shared.names import BadName, check_relative, multigroup_hash, valid_group
from agentpulse.shared.tree import STOCK_AGENT_CONF, SharedTree

EXAMPLE_15_7 = (
    b"#default\n!76 agent.conf\n<agent_config>\n\n  <!-- Shared agent configuration here -->\n\n"
    b"</agent_config>\n"
)


def tree(tmp_path: Path) -> SharedTree:
    return SharedTree(tmp_path / "etc" / "shared", tmp_path / "var" / "multigroups")


def test_worked_example_15_7_default_group_is_byte_identical(tmp_path: Path) -> None:
    shared = tree(tmp_path)
    shared.ensure_default()
    merged = shared.scan()["default"]
    assert (tmp_path / "etc/shared/default/merged.mg").read_bytes() == EXAMPLE_15_7
    assert len(EXAMPLE_15_7) == 100 and merged.size == 100
    assert merged.md5 == "ca35f9148a3273413eccb79f149f4757"
    assert md5_hex(STOCK_AGENT_CONF) == "ab73af41699f13fdd81903b5f23d8d00"


def test_files_are_merged_recursively_in_strcmp_order_skipping_hidden_merged_and_binary(
    tmp_path: Path,
) -> None:
    shared = tree(tmp_path)
    group = tmp_path / "etc/shared/web"
    (group / "a").mkdir(parents=True)
    (group / "B.txt").write_bytes(b"upper\n")
    (group / "a-c").write_bytes(b"dash")
    (group / "a" / "b").write_bytes(b"in a\n")
    (group / ".hidden").write_bytes(b"no")
    (group / "merged.mg.tmp").write_bytes(b"no")
    (group / "bin.dat").write_bytes(b"x\0y")
    (group / "empty").write_bytes(b"")
    (tmp_path / "etc/shared/ar.conf").write_bytes(b"restart-ossec0 - restart-ossec.sh - 0\n")
    shared.scan()
    assert (group / "merged.mg").read_bytes() == (
        b"#web\n"
        b"!38 ar.conf\nrestart-ossec0 - restart-ossec.sh - 0\n"
        b"!6 B.txt\nupper\n"
        b"!5 a/b\nin a\n"
        b"!4 a-c\ndash"
        b"!0 empty\n"
    )


def test_a_multigroup_appends_agent_conf_with_source_lines_and_later_groups_win(tmp_path: Path) -> None:
    shared = tree(tmp_path)
    shared.ensure_default()
    web = tmp_path / "etc/shared/web"
    web.mkdir()
    (web / "agent.conf").write_bytes(b"<agent_config><web/></agent_config>\n")
    (web / "rules.txt").write_bytes(b"web rules\n")
    (tmp_path / "etc/shared/default/rules.txt").write_bytes(b"default rules\n")
    result = shared.scan(["default,web"])
    assert multigroup_hash("default,web") == "5288d400"
    path = tmp_path / "var/multigroups/5288d400/merged.mg"
    conf = (
        b"<!-- Source file: default/agent.conf -->\n"
        + STOCK_AGENT_CONF
        + b"<!-- Source file: web/agent.conf -->\n<agent_config><web/></agent_config>\n"
    )
    expected = b"#5288d400\n" + f"!{len(conf)} agent.conf\n".encode() + conf + b"!10 rules.txt\nweb rules\n"
    assert path.read_bytes() == expected
    assert result["default,web"].md5 == hashlib.md5(expected).hexdigest()
    assert sorted(p.name for p in path.parent.iterdir()) == ["merged.mg"]  # only merged.mg stays


def test_a_change_is_seen_at_the_next_scan_and_an_unchanged_tree_is_not_rewritten(tmp_path: Path) -> None:
    shared = tree(tmp_path)
    shared.ensure_default()
    first = shared.scan()["default"]
    mtime = first.path.stat().st_mtime_ns
    assert shared.scan()["default"] == first
    assert first.path.stat().st_mtime_ns == mtime
    (tmp_path / "etc/shared/default/extra.txt").write_bytes(b"new\n")
    second = shared.scan()["default"]
    assert second.md5 != first.md5 and second.size == 100 + len(b"!4 extra.txt\nnew\n")
    first.path.write_bytes(b"edited by hand")
    assert shared.scan()["default"].md5 == second.md5  # regenerated


def test_a_multigroup_is_remerged_when_a_member_changes_and_removed_when_unused(tmp_path: Path) -> None:
    shared = tree(tmp_path)
    shared.ensure_default()
    shared.create_group("web")
    before = shared.scan(["default,web"])["default,web"]
    (tmp_path / "etc/shared/web/agent.conf").write_bytes(b"<agent_config/>\n")
    after = shared.scan(["default,web"])["default,web"]
    assert after.md5 != before.md5
    shared.scan([])
    assert not (tmp_path / "var/multigroups/5288d400").exists()


def test_chunks_are_900_bytes_and_the_agent_reassembles_the_same_file() -> None:
    data = bytes(range(32, 127)) * 30
    parts = list(chunks(data))
    assert [len(p) for p in parts[:-1]] == [900] * (len(parts) - 1)
    assert b"".join(parts) == data
    assert len(list(chunks(EXAMPLE_15_7))) == 1


def test_a_chunk_that_would_start_with_the_control_header_starts_one_byte_earlier() -> None:
    data = b"#g\n" + b"a" * 897 + b"#!-looks like control" + b"b" * 2000
    assert data[900:903] == b"#!-"
    parts = list(chunks(data))
    assert not any(part.startswith(b"#!-") for part in parts)
    assert len(parts[0]) == 899 and parts[1].startswith(b"a#!-")
    assert b"".join(parts) == data
    assert all(len(part) <= 900 for part in parts)


def test_unmerge_gives_back_the_files() -> None:
    data = build_merged("web", [SharedEntry("agent.conf", b"<a/>\n"), SharedEntry("sub/x.txt", b"x")])
    assert unmerge(data) == [SharedEntry("agent.conf", b"<a/>\n"), SharedEntry("sub/x.txt", b"x")]


@pytest.mark.parametrize("name", ["../etc/passwd", "/etc/passwd", "a/../../b", "a\0b", ".hidden", "a//b", ""])
def test_unmerge_refuses_names_that_leave_the_directory(name: str) -> None:
    data = b"#g\n!1 " + name.encode() + b"\nx"
    with pytest.raises((BadName, ValueError)):
        unmerge(data)
    with pytest.raises(BadName):
        check_relative(name)


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../x", "a\0", "", "x" * 256, "wéb"])
def test_group_names_that_would_be_paths_are_refused(name: str, tmp_path: Path) -> None:
    assert not valid_group(name)
    with pytest.raises(BadName):
        tree(tmp_path).create_group(name)
    with pytest.raises(BadName):
        tree(tmp_path).merged_path(f"default,{name}")


def test_read_group_files_leaves_out_binary_files(tmp_path: Path) -> None:
    (tmp_path / "ok.txt").write_bytes(b"fine")
    (tmp_path / "bad").write_bytes(b"\0")
    assert read_group_files(tmp_path) == [SharedEntry("ok.txt", b"fine")]
