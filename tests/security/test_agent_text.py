"""Issue 17, item 3: agent text at the output boundary. A real manager (with its embedded NATS), wire-level
agents whose startup version, uname, hashes and labels carry ESC [2J, CR, NUL, C1, bidi controls and a
newline followed by a forged log line, and a client.keys name with escape sequences. Whatever they send,
ossec.log holds no forged line, and agent_control, `agentpulse status`, `watch` and `wdb` print no control
character, while the stored value stays as sent and JSON gives it back exactly."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agentpulse.agent.connection import AgentCodec, AgentConnection
from agentpulse.escape import UNSAFE
from agentpulse.status import StatusCode
from agentpulse.wire import control
from agentpulse.wire.keys import AgentKey, KeysFile
from tests.e2e.harness import LOOPBACK, ManagerProcess, ManagerSettings, agentpulse_bin

HOSTILE = "\x1b[2J\x1b]0;owned\x07\r\x00\x7f\x9b31m\u202e"
FORGED = "agentpulse-remoted: ERROR: FORGED LOG LINE"
FORGING_VERSION = f"v99.0.0\n{FORGED}\r\x1b[2J"
EVIL_NAME = "evil-name"  # client.keys names are checked (wire.keys.check_keys): no control character gets in
KEY = "9" * 64
RECORD = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d agentpulse-[a-z\[\]0-9-]+: [A-Z]+: ")
UNAME = (
    f"Linux |host{HOSTILE} |6.1.0 |#1 SMP |x86_64 [Debian GNU/Linux|debian: 12 (bookworm)]"
    f" - Wazuh v4.14.7{HOSTILE}"
)
HOSTILE_KEEPALIVE = control.build_keepalive(
    UNAME,
    merged_sum=f"4a87{HOSTILE}",
    labels=(('"env"', f"prod{HOSTILE}"), (f'"x{HOSTILE}"', "y")),
    config_sum=f"ab73{HOSTILE}",
)
EXPECTED = control.parse_keepalive(HOSTILE_KEEPALIVE[len(control.CONTROL_HEADER) :])
OUTPUT_TIMEOUT = 15.0


def raw_control(text: str, allowed: str = "\n") -> list[str]:
    """The control characters of `text` that a sink let through (the text output's own newlines aside)."""
    return [char for char in UNSAFE.findall(text) if char not in allowed]


def cli(name: str, *args: str, home: Path) -> str:
    """A command's standard output, as bytes decoded strictly: a lone surrogate could not be printed."""
    env = dict(os.environ, AGENTPULSE_HOME=str(home), NO_COLOR="1")
    done = subprocess.run([agentpulse_bin(name), *args], capture_output=True, env=env, timeout=60)
    return done.stdout.decode("utf-8")


def write_keys(manager: ManagerProcess, names: list[str]) -> list[AgentKey]:
    text = "".join(f"{index:03d} {name} any {KEY}\n" for index, name in enumerate(names, start=1))
    manager.home.create_layout()
    manager.home.client_keys.write_text(text)
    return list(KeysFile(text.split("\n")[:-1]).active())


async def connect(manager: ManagerProcess, key: AgentKey) -> AgentConnection:
    return await AgentConnection.open(AgentCodec(key), LOOPBACK, manager.port)


@dataclass
class Seen:
    """What every sink printed once the hostile agents had spoken."""

    manager: ManagerProcess
    watch_lines: list[str] = field(default_factory=list)
    watch_json: list[str] = field(default_factory=list)
    outputs: dict[str, str] = field(default_factory=dict)


async def _watch(manager: ManagerProcess, *flags: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "agentpulse",
        "watch",
        "--home",
        str(manager.root),
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    banner = await asyncio.wait_for(process.stderr.readline(), OUTPUT_TIMEOUT)
    assert b"following" in banner, banner
    return process


async def _lines_until_keepalive(process: asyncio.subprocess.Process, marker: str) -> list[str]:
    assert process.stdout is not None
    lines: list[str] = []
    for _ in range(20):  # bounded: a startup, a pending, an active and the keep-alive events
        line = (await asyncio.wait_for(process.stdout.readline(), OUTPUT_TIMEOUT)).decode("utf-8")
        lines.append(line)
        if marker in line:
            return lines
    raise AssertionError(f"no keep-alive event among {lines}")


async def _speak(manager: ManagerProcess, evil: AgentKey, forger: AgentKey, seen: Seen) -> None:
    human = await _watch(manager)
    as_json = await _watch(manager, "--json")
    try:
        refused = await connect(manager, forger)
        refused.send(control.build_startup(FORGING_VERSION))
        reply = await refused.receive()
        assert reply == control.ErrorReply(control.ERR_NEWER_VERSION), reply
        await manager.reach(forger.number, "never_connected", StatusCode.INVALID_VERSION)
        refused.close()

        agent = await connect(manager, evil)
        agent.send(control.build_startup("v4.14.7"))
        assert await agent.receive() == control.Ack()
        agent.send(HOSTILE_KEEPALIVE)
        assert await agent.receive() == control.Ack()
        await manager.reach(evil.number, "active")
        seen.watch_lines = await _lines_until_keepalive(human, "  keepalive  ")
        seen.watch_json = await _lines_until_keepalive(as_json, '"type":"keepalive"')
        agent.close()
    finally:
        for process in (human, as_json):
            process.terminate()
            await process.wait()


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seen]:
    manager = ManagerProcess(
        tmp_path_factory.mktemp("agent-text") / "ossec",
        ManagerSettings(nats="<nats><enabled>yes</enabled></nats>"),
    )
    try:
        evil, forger = write_keys(manager, [EVIL_NAME, "forger"])
        manager.start()
        result = Seen(manager)
        asyncio.run(_speak(manager, evil, forger, result))
        home = manager.root
        for label, name, args in [
            ("-l", "agent_control", ["-l"]),
            ("-s -l", "agent_control", ["-s", "-l"]),
            ("-j -l", "agent_control", ["-j", "-l"]),
            ("-i", "agent_control", ["-i", "001"]),
            ("-s -i", "agent_control", ["-s", "-i", "001"]),
            ("-j -i", "agent_control", ["-j", "-i", "001"]),
            ("-i forger", "agent_control", ["-i", "002"]),
            ("status", "agentpulse", ["status", "--color", "never"]),
            ("wdb info", "agentpulse", ["wdb", "global get-agent-info 1"]),
            ("wdb labels", "agentpulse", ["wdb", "global get-labels 1"]),
            ("wdb pretty", "agentpulse", ["wdb", "--pretty", "global get-agent-info 1"]),
            ("manage_agents -l", "manage_agents", ["-l"]),
        ]:
            result.outputs[label] = cli(name, *args, home=home)
        yield result
    finally:
        manager.stop()


def test_a_newline_in_the_startup_version_forges_no_log_line(seen: Seen) -> None:
    data = seen.manager.home.log_file.read_bytes().decode("utf-8")
    lines = data.split("\n")[:-1]
    assert not any(line.startswith(FORGED) for line in lines)
    assert [line for line in lines if not RECORD.match(line) and not line.startswith(" ")] == []
    assert raw_control(data) == []
    assert "(version v99.0.0\\nagentpulse-remoted: ERROR: FORGED LOG LINE\\r\\x1b[2J)" in data


def test_the_standard_error_log_forges_no_line_either(seen: Seen) -> None:
    lines = seen.manager.output().split("\n")
    assert not any(line.startswith(FORGED) for line in lines)
    assert "\x1b" not in seen.manager.output() and "\r" not in seen.manager.output()


def test_the_stored_values_are_as_the_agent_sent_them(seen: Seen) -> None:
    row = seen.manager.query("SELECT * FROM agent WHERE id = 1")[0]
    assert row["name"] == EVIL_NAME
    assert (row["os_uname"], row["version"]) == (EXPECTED.uname, EXPECTED.version)
    assert (row["config_sum"], row["merged_sum"]) == (EXPECTED.config_sum, EXPECTED.merged_sum)
    assert HOSTILE in row["os_uname"] and HOSTILE in row["version"]
    forger = seen.manager.query("SELECT version FROM agent WHERE id = 2")[0]
    assert forger["version"] == f"Wazuh {FORGING_VERSION}"


@pytest.mark.parametrize("label", ["-l", "-s -l", "-i", "-s -i", "-i forger"])
def test_agent_control_prints_no_control_character(seen: Seen, label: str) -> None:
    output = seen.outputs[label]
    assert output.strip()
    assert raw_control(output) == []


def test_agent_control_shows_the_escaped_text(seen: Seen) -> None:
    info = seen.outputs["-i"]
    assert "   Agent Name: evil-name\n" in info
    assert (
        "   Client version:      Wazuh v4.14.7\\x1b[2J\\x1b]0;owned\\x07\\r\\x00\\x7f\\x9b31m\\u202e\n"
        in info
    )
    # Active, or Disconnected once the closed connection's grace ran out on a loaded machine.
    assert "   ID: 001, Name: evil-name, IP: any, " in seen.outputs["-l"]
    assert (
        "Client version:      Wazuh v99.0.0\\nagentpulse-remoted: ERROR: FORGED" in seen.outputs["-i forger"]
    )


@pytest.mark.parametrize("label", ["-j -l", "-j -i"])
def test_agent_control_json_has_no_raw_control_character_and_keeps_the_value(seen: Seen, label: str) -> None:
    output = seen.outputs[label]
    assert raw_control(output, allowed="") == []
    data = json.loads(output)["data"]
    if label == "-j -i":
        assert (data["name"], data["os"], data["version"]) == (EVIL_NAME, EXPECTED.uname, EXPECTED.version)
        assert data["mergedSum"] == EXPECTED.merged_sum
    else:
        assert data[1]["name"] == EVIL_NAME


def test_status_prints_no_control_character(seen: Seen) -> None:
    output = seen.outputs["status"]
    assert "Latest changes:" in output
    assert raw_control(output) == []
    assert " 001 evil-name: " in output


def test_watch_prints_no_control_character(seen: Seen) -> None:
    text = "".join(seen.watch_lines)
    assert raw_control(text) == []
    keepalive = seen.watch_lines[-1]
    assert "001 evil-name  keepalive" in keepalive
    assert f"Wazuh v4.14.7{HOSTILE}" not in keepalive


def test_watch_json_has_no_raw_control_character_and_keeps_the_value(seen: Seen) -> None:
    assert raw_control("".join(seen.watch_json)) == []
    event = json.loads(seen.watch_json[-1])
    assert event["type"] == "keepalive"
    assert event["name"] == EVIL_NAME
    assert event["version"] == EXPECTED.version


@pytest.mark.parametrize("label", ["wdb info", "wdb labels", "wdb pretty"])
def test_wdb_prints_no_control_character_and_keeps_the_value(seen: Seen, label: str) -> None:
    output = seen.outputs[label]
    assert output.startswith("ok")
    assert raw_control(output) == []
    payload = json.loads(output.partition("ok")[2])
    if label == "wdb labels":
        assert set(EXPECTED.labels) <= {(row["key"], row["value"]) for row in payload}
    else:
        assert (payload[0]["name"], payload[0]["os_uname"]) == (EVIL_NAME, EXPECTED.uname)


def test_manage_agents_lists_no_control_character(seen: Seen) -> None:
    output = seen.outputs["manage_agents -l"]
    assert raw_control(output) == []
    assert "   ID: 001, Name: evil-name, IP: any\n" in output


def test_a_lone_surrogate_in_the_startup_version_holds_up_no_write(manager: ManagerProcess) -> None:
    """`{"version":"v99.0.0\\ud800"}` is valid JSON whose string no UTF-8 writer accepts: stored with
    U+FFFD in its place, so the batch it is written in (and every status change with it) goes through."""
    refused, healthy = write_keys(manager, ["refused", "healthy"])
    manager.start()

    async def scenario() -> None:
        connection = await connect(manager, refused)
        connection.send(control.build_startup("v99.0.0\ud800"))
        assert await connection.receive() == control.ErrorReply(control.ERR_NEWER_VERSION)
        other = await connect(manager, healthy)
        other.send(control.build_startup("v4.14.7"))
        assert await other.receive() == control.Ack()
        await manager.reach(healthy.number, "pending", timeout=5)
        await manager.reach(refused.number, "never_connected", StatusCode.INVALID_VERSION, timeout=5)
        connection.close()
        other.close()

    asyncio.run(scenario())
    assert manager.query("SELECT version FROM agent WHERE id = 1")[0][0] == "Wazuh v99.0.0\ufffd"
    assert "write failed" not in manager.output()
