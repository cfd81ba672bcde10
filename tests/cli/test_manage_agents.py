"""`manage_agents`: Wazuh's flags and messages, edits that keep every other line, atomic 0640 writes."""

from __future__ import annotations

import base64
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agentpulse.cli.manage_agents import main
from agentpulse.keysfile import KeysLock, write_keys_file
from agentpulse.wire.keys import KeysFile

ORIGINAL = (
    "# managed by hand: keep this comment\n"
    "001 web-01 any aaaa\n"
    "002 db-02 10.0.0.2 bbbb\n"
    "003 !old-03 any cccc\n"
    "004 mail-04 10.0.0.0/24 key with spaces\n"
)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "ossec"


def _keys(home: Path) -> Path:
    return home / "etc" / "client.keys"


def _run(home: Path, *args: str) -> int:
    return main(["--home", str(home), *args])


def _seed(home: Path, text: str = ORIGINAL) -> bytes:
    _keys(home).parent.mkdir(parents=True, exist_ok=True)
    _keys(home).write_text(text)
    return text.encode()


def test_add_creates_the_file_with_ids_001_002(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(home, "-a", "any", "-n", "web-01") == 0
    assert _run(home, "-a", "10.0.0.7", "-n", "db-01") == 0
    assert capsys.readouterr().out == "Agent added with ID 001.\nAgent added with ID 002.\n"
    parsed = KeysFile.parse(_keys(home).read_text())
    assert [(e.id, e.name, e.ip.text) for e in parsed.active()] == [
        ("001", "web-01", "any"),
        ("002", "db-01", "10.0.0.7"),
    ]
    assert all(len(e.key) == 64 for e in parsed.entries)
    assert stat.S_IMODE(_keys(home).stat().st_mode) == 0o640
    # no temporary file left; the lock file every writer shares stays
    assert sorted(p.name for p in _keys(home).parent.iterdir()) == [".client.keys.lock", "client.keys"]


def test_add_after_removed_lines_never_reuses_an_id(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _seed(home)
    assert _run(home, "-a", "any", "-n", "new-05") == 0
    assert capsys.readouterr().out == "Agent added with ID 005.\n"


def test_add_with_an_explicit_id_formats_it(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(home, "-a", "any", "-n", "seven", "-i", "7") == 0
    assert capsys.readouterr().out == "Agent added with ID 007.\n"
    assert _keys(home).read_text().startswith("007 seven any ")


def test_add_with_a_used_id_is_refused(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _seed(home)
    assert _run(home, "-a", "any", "-n", "again", "--id", "3") == 1  # removed ids stay taken
    assert "already used" in capsys.readouterr().err
    assert _keys(home).read_bytes() == before


def test_duplicate_name_is_refused(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = _seed(home)
    assert _run(home, "-a", "any", "-n", "web-01") == 1
    captured = capsys.readouterr()
    assert "web-01" in captured.err and "already exists" in captured.err
    assert captured.out == ""
    assert _keys(home).read_bytes() == before


def test_the_name_of_a_removed_agent_can_be_used_again(home: Path) -> None:
    _seed(home)
    assert _run(home, "-a", "any", "-n", "old-03") == 0


@pytest.mark.parametrize("ip", ["10.0.0.999", "not-an-ip", "10.0.0.1/33", ""])
def test_bad_ip_is_refused(home: Path, capsys: pytest.CaptureFixture[str], ip: str) -> None:
    before = _seed(home)
    assert _run(home, "-a", ip, "-n", "new-05") == 1
    assert "invalid ip" in capsys.readouterr().err
    assert _keys(home).read_bytes() == before


def test_duplicate_ip_is_refused_but_any_is_not(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _seed(home)
    assert _run(home, "-a", "10.0.0.2", "-n", "db-05") == 1
    assert "duplicated IP" in capsys.readouterr().err
    assert _run(home, "-a", "any", "-n", "web-05") == 0


@pytest.mark.parametrize("name", ["x", "has space", "semi;colon", "a" * 128])
def test_bad_name_is_refused(home: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    assert _run(home, "-a", "any", "-n", name) == 1
    assert "invalid agent name" in capsys.readouterr().err
    assert not _keys(home).exists()


def test_remove_marks_the_name_and_keeps_every_other_byte(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _seed(home)
    rids = home / "queue" / "rids"
    rids.mkdir(parents=True)
    (rids / "002").write_text("5:17:")
    (rids / "001").write_text("1:1:")
    assert _run(home, "-r", "2") == 0
    assert capsys.readouterr().out == "Agent '002' removed.\n"
    assert _keys(home).read_bytes() == before.replace(b"002 db-02 ", b"002 !db-02 ")
    assert not (rids / "002").exists()
    assert (rids / "001").exists()


def test_remove_unknown_or_already_removed_id_is_refused(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _seed(home)
    assert _run(home, "-r", "9") == 1
    assert _run(home, "-r", "003") == 1
    assert capsys.readouterr().err.count("ID is not present") == 2
    assert _keys(home).read_bytes() == before


def test_list_prints_the_active_agents_as_wazuh_does(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _seed(home)
    assert _run(home, "-l") == 0
    assert capsys.readouterr().out == (
        "\nAvailable agents: \n"
        "   ID: 001, Name: web-01, IP: any\n"
        "   ID: 002, Name: db-02, IP: 10.0.0.2\n"
        "   ID: 004, Name: mail-04, IP: 10.0.0.0/24\n"
    )


def test_list_without_agents(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(home, "-l") == 0
    assert "No agent available" in capsys.readouterr().out


def test_extract_prints_a_base64_line_that_decodes_to_the_entry(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _seed(home)
    assert _run(home, "-e", "4") == 0
    out = capsys.readouterr().out
    header, encoded, tail = out.split("\n")[1:]
    assert header == "Agent key information for '004' is: "
    assert tail == ""
    assert base64.b64decode(encoded).decode() == "004 mail-04 10.0.0.0/24 key with spaces"


def test_extract_unknown_id_is_refused(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _seed(home)
    assert _run(home, "-e", "3") == 1
    assert "ID is not present" in capsys.readouterr().err


def test_bulk_add_of_1000_agents_gives_unique_names_and_ids(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _seed(home)
    assert _run(home, "--bulk", "1000", "--prefix", "sim") == 0
    assert capsys.readouterr().out == "1000 agents added, ids 005 to 1004.\n"
    text = _keys(home).read_text()
    assert text.startswith(ORIGINAL)
    parsed = KeysFile.parse(text)
    assert not parsed.problems
    added = [e for e in parsed.active() if e.name.startswith("sim-")]
    assert len(added) == 1000
    assert len({e.name for e in added}) == len({e.id for e in added}) == len({e.key for e in added}) == 1000
    assert (added[0].name, added[-1].name) == ("sim-00001", "sim-01000")
    assert all(e.ip.text == "any" for e in added)


def test_bulk_add_refuses_names_that_exist(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _seed(home, "001 sim-00002 any aaaa\n")
    assert _run(home, "--bulk", "3", "--prefix", "sim") == 1
    assert "sim-00002" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args",
    [[], ["-l", "-r", "1"], ["-a", "any"], ["-n", "x-1"], ["-i", "5"], ["--bulk", "3"], ["--prefix", "p"]],
)
def test_usage_errors_exit_2(home: Path, args: list[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        _run(home, *args)
    assert caught.value.code == 2


def test_console_script_adds_and_lists(home: Path) -> None:
    script = Path(sys.executable).parent / "manage_agents"
    if not script.exists():
        pytest.skip(f"{script} is not installed (pip install -e .)")
    added = subprocess.run(
        [str(script), "--home", str(home), "-a", "any", "-n", "web-01"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (added.returncode, added.stdout) == (0, "Agent added with ID 001.\n")
    listed = subprocess.run(
        [str(script), "--home", str(home), "-l"], capture_output=True, text=True, timeout=60, check=False
    )
    assert listed.stdout == "\nAvailable agents: \n   ID: 001, Name: web-01, IP: any\n"


def test_an_edit_waits_for_the_keys_lock_and_keeps_what_the_holder_wrote(home: Path) -> None:
    """Enrolment holds the same lock from its read to its write: neither loses the other's line."""
    _seed(home, "001 web-01 any aaaa\n")
    lock = KeysLock(_keys(home))
    with lock:
        adding = threading.Thread(target=_run, args=(home, "-a", "any", "-n", "db-02"))
        adding.start()
        time.sleep(0.3)
        assert adding.is_alive()  # waiting for the lock
        keys = KeysFile.parse(_keys(home).read_text())
        keys.add("enrolled-03", key="eeee")
        write_keys_file(_keys(home), keys)
    adding.join(10)
    names = [entry.name for entry in KeysFile.parse(_keys(home).read_text()).active()]
    assert names == ["web-01", "enrolled-03", "db-02"]
