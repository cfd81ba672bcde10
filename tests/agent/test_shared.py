"""The agent's side of a push (reference 15.5): write, verify, unpack; names that would leave etc/shared."""

from __future__ import annotations

from pathlib import Path

from agentpulse.agent.shared import SharedReceiver
from agentpulse.shared.merge import SharedEntry, build_merged, chunks, md5_hex
from agentpulse.wire import control


def receive(receiver: SharedReceiver, name: str, data: bytes, md5: str | None = None) -> bool:
    assert receiver.begin(md5 or md5_hex(data), name) is not None
    for chunk in chunks(data):
        receiver.append(chunk)
    closed = receiver.close()
    assert closed is not None
    return receiver.finish(*closed)


def test_a_pushed_merged_mg_is_verified_unpacked_and_old_files_go(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "stale.txt").write_text("old")
    data = build_merged("web", [SharedEntry("agent.conf", b"<a/>\n"), SharedEntry("sub/x.txt", b"x")])
    assert receive(SharedReceiver(shared), "merged.mg", data)
    assert (shared / "merged.mg").read_bytes() == data
    assert (shared / "agent.conf").read_bytes() == b"<a/>\n"
    assert (shared / "sub" / "x.txt").read_bytes() == b"x"
    assert not (shared / "stale.txt").exists()


def test_a_file_whose_md5_fails_is_deleted(tmp_path: Path) -> None:
    receiver = SharedReceiver(tmp_path)
    assert not receive(receiver, "merged.mg", b"#g\n!1 a\nx", md5="0" * 32)
    assert not (tmp_path / "merged.mg").exists()
    assert receiver.failed == 1


def test_names_with_dot_dot_are_refused_and_slashes_become_dashes(tmp_path: Path) -> None:
    receiver = SharedReceiver(tmp_path / "shared")
    assert receiver.begin("0" * 32, "../../etc/passwd") is None
    assert receiver.begin("0" * 32, "a/b") == tmp_path / "shared" / "a-b"
    assert receiver.begin("0" * 32, ".hidden") == tmp_path / "shared" / "-hidden"


def test_an_archive_naming_a_path_outside_is_not_unpacked(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    data = b"#g\n!1 ../evil\nx"
    assert not receive(SharedReceiver(shared), "merged.mg", data)
    assert not (tmp_path / "evil").exists()


def test_a_chunk_starting_with_the_control_header_would_cut_a_wazuh_agents_file() -> None:
    """Why agentpulse never sends such a chunk: agentd (and our agent) read it as a control message."""
    assert isinstance(control.parse_from_manager(b"#!-looks like data"), control.OtherControl)
    assert isinstance(control.parse_from_manager(b"a#!-looks like data"), control.AgentEvent)
    assert control.parse_from_manager(b"#!-up file " + b"a" * 32 + b" merged.mg\n") == control.FileUpdate(
        "a" * 32, "merged.mg"
    )
    assert control.parse_from_manager(control.FILE_CLOSE) == control.FileClose()
    assert len(control.build_file_update("ca35f9148a3273413eccb79f149f4757", "merged.mg")) == 54
