"""agent_control prints exactly what Wazuh 4.x prints, from client.keys and global.db."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from agentpulse.cli import agent_control
from agentpulse.cli.agent_control import HELP, AgentInfo, ListedAgent, Output
from agentpulse.paths import Home
from agentpulse.store.sqlite import schema

HOST = "mgr-host"
REAL_HOST = socket.gethostname()  # read before the fixture below replaces it
KEYS = (
    "# hand edited\n"
    f"001 agent-01 any {'a' * 64}\n"
    f"002 web-02 10.0.0.0/24 {'b' * 64}\n"
    f"003 !old-03 any {'c' * 64}\n"
    f"004 db-04 192.168.1.4 {'d' * 64}\n"
    f"005 new-05 any {'e' * 64}\n"
)
UNAME = "Linux |agent-01 |6.1.0 |#1 SMP |x86_64"

LIST_HEADER = "\nWazuh agent_control. List of available agents:"
SERVER_LINE = f"\n   ID: 000, Name: {HOST} (server), IP: 127.0.0.1, Active/Local\n"
AGENT_LINES = {
    "001": "   ID: 001, Name: agent-01, IP: any, Active\n",
    "002": "   ID: 002, Name: web-02, IP: 10.0.0.0/24, Disconnected\n",
    "004": "   ID: 004, Name: db-04, IP: 192.168.1.4, Pending\n",
    "005": "   ID: 005, Name: new-05, IP: any, Never connected\n",
}
AGENTLESS = "\nList of agentless devices:\n"


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """ctime() prints local time: pin it so the expected strings hold on any machine."""
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if saved is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = saved
    time.tzset()


@pytest.fixture(autouse=True)
def hostname(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: HOST)


def _set_fim(path: Path, start: int, end: int) -> None:
    schema.create_agent_db(path)
    with closing(schema.connect(path)) as conn, conn:
        conn.execute("UPDATE scan_info SET start_scan = ?, end_scan = ? WHERE module = 'fim'", (start, end))


@pytest.fixture
def home(tmp_path: Path) -> Home:
    home = Home(tmp_path / "ossec")
    home.create_layout()
    home.client_keys.write_text(KEYS)
    schema.create_global_db(home.global_db, HOST, 1_700_000_000)
    with closing(schema.connect(home.global_db)) as conn, conn:
        conn.execute(
            "INSERT INTO agent (id, name, register_ip, date_add, connection_status, os_uname, version,"
            " config_sum, merged_sum, last_keepalive) VALUES (1, 'agent-01', 'any', 1, 'active', ?,"
            " 'Wazuh v4.14.7', 'ab12', 'cd34', 1714560123)",
            (UNAME,),
        )
        conn.execute(
            "INSERT INTO agent (id, name, date_add, connection_status, last_keepalive)"
            " VALUES (2, 'web-02', 1, 'disconnected', 1714600000)"
        )
        conn.execute(
            "INSERT INTO agent (id, name, date_add, connection_status) VALUES (3, 'old-03', 1, 'active')"
        )
        conn.execute(
            "INSERT INTO agent (id, name, date_add, connection_status, version)"
            " VALUES (4, 'db-04', 1, 'pending', 'Wazuh v4.14.7')"
        )
        conn.execute("INSERT INTO `group` (name) VALUES ('default'), ('web')")
        conn.execute("INSERT INTO belongs (id_agent, id_group) VALUES (1, 1), (2, 2), (4, 2)")
    _set_fim(home.agent_db(1), 1714500000, 1714500060)
    _set_fim(home.agent_db(4), 1714600000, 1714500060)
    return home


def run(home: Home, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, int]:
    status = agent_control.main(["--home", str(home.root), *args])
    return capsys.readouterr().out, status


# ---- -l ----------------------------------------------------------------------------------------------


def test_list_shows_server_every_key_and_the_agentless_header(
    home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    out, status = run(home, capsys, "-l")
    assert status == 0
    assert out == LIST_HEADER + SERVER_LINE + "".join(AGENT_LINES.values()) + AGENTLESS + "\n"


def test_list_active_only_has_no_agentless_part(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = run(home, capsys, "-lc")
    assert out == LIST_HEADER + SERVER_LINE + AGENT_LINES["001"] + "\n"


def test_list_disconnected_only_has_no_server_line(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = run(home, capsys, "-ln")
    assert out == LIST_HEADER + "\n" + AGENT_LINES["002"] + AGENTLESS + "\n"


def test_list_csv(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = run(home, capsys, "-l", "-s")
    assert out == (
        f"000,{HOST} (server),127.0.0.1,Active/Local,\n"
        "001,agent-01,any,Active,\n"
        "002,web-02,10.0.0.0/24,Disconnected,\n"
        "004,db-04,192.168.1.4,Pending,\n"
        "005,new-05,any,Never connected,\n"
        "\n"
    )


def test_list_combined_flags_ls_equal_separate_ones(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    combined, _ = run(home, capsys, "-ls")
    separate, _ = run(home, capsys, "-l", "-s")
    assert combined == separate


def test_list_json_has_no_trailing_newline(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = run(home, capsys, "-lj")
    assert out == (
        '{"error":0,"data":['
        f'{{"id":"000","name":"{HOST}","ip":"127.0.0.1","status":"Active"}},'
        '{"id":"001","name":"agent-01","ip":"any","status":"Active"},'
        '{"id":"002","name":"web-02","ip":"10.0.0.0/24","status":"Disconnected"},'
        '{"id":"004","name":"db-04","ip":"192.168.1.4","status":"Pending"},'
        '{"id":"005","name":"new-05","ip":"any","status":"Never connected"}]}'
    )


def test_list_json_disconnected_only_leaves_the_server_out(
    home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = run(home, capsys, "-l", "-n", "-j")
    assert (
        out == '{"error":0,"data":[{"id":"002","name":"web-02","ip":"10.0.0.0/24","status":"Disconnected"}]}'
    )


def test_list_group_shows_only_its_members(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = run(home, capsys, "-l", "-g", "web")
    assert out == LIST_HEADER + SERVER_LINE + AGENT_LINES["002"] + AGENT_LINES["004"] + AGENTLESS + "\n"


def test_list_unknown_group_lists_no_agent(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = run(home, capsys, "-lg", "nosuch")
    assert out == LIST_HEADER + SERVER_LINE + AGENTLESS + "\n"


def test_list_without_global_db_shows_every_agent_never_connected(
    home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    home.global_db.unlink()
    out, _ = run(home, capsys, "-l")
    never = [line.rsplit(", ", 1)[0] + ", Never connected\n" for line in AGENT_LINES.values()]
    assert out == LIST_HEADER + SERVER_LINE + "".join(never) + AGENTLESS + "\n"


def test_list_without_client_keys_stops_before_the_agentless_part(
    home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    home.client_keys.unlink()
    out, _ = run(home, capsys, "-l")
    assert out == LIST_HEADER + SERVER_LINE + "\n"


def test_list_reads_while_a_writer_is_open_and_leaves_no_side_files_after(
    home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    with closing(schema.connect(home.global_db)) as writer:
        with writer:
            writer.execute("UPDATE agent SET connection_status = 'active' WHERE id = 2")
        out, _ = run(home, capsys, "-lc")
        assert AGENT_LINES["002"].replace("Disconnected", "Active") in out
    out, _ = run(home, capsys, "-lc")
    assert not Path(f"{home.global_db}-wal").exists()
    assert not Path(f"{home.global_db}-shm").exists()


# ---- -i ----------------------------------------------------------------------------------------------


def test_info_text(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    out, status = run(home, capsys, "-i", "001")
    assert status == 0
    assert out == (
        "\nWazuh agent_control. Agent information:"
        "\n   Agent ID:   001\n"
        "   Agent Name: agent-01\n"
        "   IP address: any\n"
        "   Status:     Active\n\n"
        f"   Operating system:    {UNAME}\n"
        "   Client version:      Wazuh v4.14.7\n"
        "   Configuration hash:  ab12\n"
        "   Shared file hash:    cd34\n"
        "   Last keep alive:     1714560123\n\n"
        "   Syscheck last started at:  Tue Apr 30 18:00:00 2024\n"
        "   Syscheck last ended at:    Tue Apr 30 18:01:00 2024\n\n"
    )


def test_info_null_columns_print_null_and_missing_scans_print_unknown(
    home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = run(home, capsys, "-i", "002")
    assert out == (
        "\nWazuh agent_control. Agent information:"
        "\n   Agent ID:   002\n"
        "   Agent Name: web-02\n"
        "   IP address: 10.0.0.0\n"  # the keys ip without its mask
        "   Status:     Disconnected\n\n"
        "   Operating system:    (null)\n"
        "   Client version:      (null)\n"
        "   Configuration hash:  (null)\n"
        "   Shared file hash:    (null)\n"
        "   Last keep alive:     1714600000\n\n"
        "   Syscheck last started at:  Unknown\n"
        "   Syscheck last ended at:    Unknown\n"
    )


def test_info_scan_started_after_the_last_end_is_in_progress(
    home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = run(home, capsys, "-i", "004")
    assert "   Syscheck last started at:  Wed May  1 21:46:40 2024 (Scan in progress)\n" in out
    assert out.endswith("   Syscheck last ended at:    Tue Apr 30 18:01:00 2024\n\n")


def test_info_agent_missing_from_global_db_is_never_connected(
    home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = run(home, capsys, "-i", "005")
    assert "   Status:     Never connected\n\n   Operating system:    (null)\n" in out


def test_info_json_leaves_out_null_values(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = run(home, capsys, "-i", "001", "-j")
    assert out == (
        '{"error":0,"data":{"id":"001","name":"agent-01","ip":"any","status":"Active",'
        f'"os":"{UNAME}","version":"Wazuh v4.14.7","configSum":"ab12","mergedSum":"cd34",'
        '"lastKeepAlive":"1714560123","syscheckTime":"Tue Apr 30 18:00:00 2024",'
        '"syscheckEndTime":"Tue Apr 30 18:01:00 2024\\n"}}'
    )
    out, _ = run(home, capsys, "-i", "002", "-j")
    assert out == (
        '{"error":0,"data":{"id":"002","name":"web-02","ip":"10.0.0.0","status":"Disconnected",'
        '"lastKeepAlive":"1714600000","syscheckTime":"Unknown","syscheckEndTime":"Unknown"}}'
    )


def test_info_csv(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = run(home, capsys, "-i", "001", "-s")
    assert out == f"001,agent-01,any,Active,{UNAME},Wazuh v4.14.7,1714560123,Tue Apr 30 18:00:00 2024,\n"
    out, _ = run(home, capsys, "-s", "-i", "002")
    assert out == "002,web-02,10.0.0.0,Disconnected,(null),(null),1714600000,Unknown,\n"


def test_info_manager_is_the_local_instance(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    out, _ = run(home, capsys, "-i", "000")
    assert out == (
        "\nWazuh agent_control. Agent information:"
        "\n   Agent ID:   000 (local instance)\n"
        f"   Agent Name: {HOST}\n"
        "   IP address: 127.0.0.1\n"
        "   Status:     Active/Local\n\n"
        "   Operating system:    (null)\n"
        "   Client version:      (null)\n"
        "   Configuration hash:  (null)\n"
        "   Shared file hash:    (null)\n"
        "   Last keep alive:     253402300799\n\n"
        "   Syscheck last started at:  Unknown\n"
        "   Syscheck last ended at:    Unknown\n"
    )
    out, _ = run(home, capsys, "-i", "000", "-s")
    assert out == f"000,{HOST},127.0.0.1,Active/Local,(null),(null),253402300799,Unknown,\n"


def test_unknown_id_prints_the_error_and_help_and_exits_1(
    home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    out, status = run(home, capsys, "-i", "009")
    assert (out, status) == ("\n** Invalid agent id '009'.\n" + HELP, 1)


def test_unknown_id_json(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    out, status = run(home, capsys, "-j", "-i", "009")
    assert (out, status) == ('{"error":40,"message":"Invalid agent id"}', 0)


@pytest.mark.parametrize("agent_id", ["1", "003"])
def test_id_must_be_written_as_in_client_keys_and_not_removed(
    home: Home, capsys: pytest.CaptureFixture[str], agent_id: str
) -> None:
    out, status = run(home, capsys, "-i", agent_id)
    assert out.startswith(f"\n** Invalid agent id '{agent_id}'.\n")
    assert status == 1


# ---- command line ------------------------------------------------------------------------------------


def test_no_arguments_and_h_print_help_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert agent_control.main([]) == 1
    assert capsys.readouterr().out == HELP
    assert agent_control.main(["-h"]) == 1
    assert capsys.readouterr().out == HELP


def test_unknown_option_prints_help_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert agent_control.main(["-x"]) == 1
    captured = capsys.readouterr()
    assert captured.out == HELP
    assert "agent_control: option -x not recognized" in captured.err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert agent_control.main(["-V"]) == 0
    assert "agentpulse v" in capsys.readouterr().out


def test_no_action_is_an_invalid_combination(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    out, status = run(home, capsys, "-s")
    assert (out, status) == ("\n** Invalid argument combination.\n" + HELP, 1)


def test_home_comes_from_the_environment(
    home: Home, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTPULSE_HOME", str(home.root))
    assert agent_control.main(["-lc"]) == 0
    assert capsys.readouterr().out == LIST_HEADER + SERVER_LINE + AGENT_LINES["001"] + "\n"


def test_unreadable_database_is_reported_on_stderr(home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    home.global_db.write_bytes(b"not a database" * 100)
    assert agent_control.main(["--home", str(home.root), "-l"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"agent_control: cannot read the manager home {home.root}: ")


# ---- pure formatting ---------------------------------------------------------------------------------


def test_syscheck_times() -> None:
    assert agent_control.syscheck_times(None, None) == ("Unknown", "Unknown")
    assert agent_control.syscheck_times(0, 1714500060) == ("Unknown", "Tue Apr 30 18:01:00 2024\n")
    assert agent_control.syscheck_times(1714500060, 0) == (
        "Tue Apr 30 18:01:00 2024 (Scan in progress)",
        "Unknown",
    )
    assert agent_control.syscheck_times(1714500000, 1714500000) == (
        "Tue Apr 30 18:00:00 2024",
        "Tue Apr 30 18:00:00 2024\n",
    )


def test_format_list_is_pure() -> None:
    agents = [ListedAgent("007", "x1", "any", "Active")]
    assert agent_control.format_list("h", agents, Output.CSV, show_server=False) == "007,x1,any,Active,\n\n"


def test_format_info_json_escapes_like_cjson() -> None:
    info = AgentInfo("001", "a1", "any", "Active", os='say "hi"\t\x01')
    out = agent_control.format_info(info, Output.JSON)
    assert '"os":"say \\"hi\\"\\t\\u0001"' in out


# ---- the installed console script --------------------------------------------------------------------


def test_console_script_lists_agents(home: Home) -> None:
    script = Path(sys.executable).parent / "agent_control"
    env = dict(os.environ, AGENTPULSE_HOME=str(home.root), TZ="UTC")
    result = subprocess.run(
        [str(script), "-ls"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n") == [
        f"000,{REAL_HOST} (server),127.0.0.1,Active/Local,",
        "001,agent-01,any,Active,",
        "002,web-02,10.0.0.0/24,Disconnected,",
        "004,db-04,192.168.1.4,Pending,",
        "005,new-05,any,Never connected,",
        "",
        "",
    ]
