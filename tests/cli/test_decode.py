"""`agentpulse decode`: the reference vectors, decoded by the pure function and by the installed command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agentpulse.cli.decode import decode_capture, parse_hex, split_transport
from agentpulse.wire.errors import Reason, WireError
from agentpulse.wire.frames import LENGTH, encode_frame
from agentpulse.wire.keys import KeysFile
from agentpulse.wire.secure import AgentCipher, CipherKind

AGENTPULSE = Path(sys.executable).parent / "agentpulse"
OTHER_KEY = "0" * 64
WRONG_KEY_REASONS = {Reason.WRONG_KEY.value, Reason.BAD_PADDING.value, Reason.CORRUPT.value}

EXPECTED = [
    # transport, cipher, prefixed, rand, global, local, direction, control type
    ("tcp", "aes", True, 12345, 0, 27, "agent_to_manager", "keepalive"),
    ("udp", "aes", False, 777, 3, 9997, "agent_to_manager", "startup"),
    ("tcp", "blowfish", False, 65535, 1, 1, "manager_to_agent", "ack"),
]


@pytest.fixture
def keys_line(vectors: dict[str, Any]) -> str:
    line: str = vectors["client_keys_line"]
    return line


@pytest.fixture
def keys_path(tmp_path: Path, keys_line: str) -> Path:
    path = tmp_path / "client.keys"
    path.write_text("# test keys\n" + keys_line + "\n")
    return path


def _capture(vectors: dict[str, Any], index: int) -> bytes:
    return bytes.fromhex(vectors["vectors"][index]["frame_hex"])


def _run(*args: str) -> tuple[int, dict[str, Any]]:
    if not AGENTPULSE.exists():
        pytest.skip(f"{AGENTPULSE} is not installed (pip install -e .)")
    done = subprocess.run(
        [str(AGENTPULSE), "decode", *args], capture_output=True, text=True, timeout=60, check=False
    )
    return done.returncode, json.loads(done.stdout)


def _seal(keys_line: str, message: bytes, *, prefixed: bool = False) -> bytes:
    agent_id, name, _ip, key = keys_line.split(" ", 3)
    return AgentCipher.for_key(agent_id, name, key).seal(
        message,
        cipher=CipherKind.AES,
        rand=1,
        global_counter=0,
        local_counter=1,
        agent_id=agent_id if prefixed else None,
    )


def _assert_vector(result: dict[str, Any], vectors: dict[str, Any], index: int) -> None:
    transport, cipher, prefixed, rand, global_counter, local_counter, direction, kind = EXPECTED[index]
    assert result["transport"] == transport
    assert result["agent"] == {"id": "001", "name": "agent-01", "ip": "any"}
    assert result["cipher"] == cipher
    assert result["prefixed"] is prefixed
    assert (result["rand"], result["global_counter"], result["local_counter"]) == (
        rand,
        global_counter,
        local_counter,
    )
    assert result["checksum_valid"] is True
    assert result["message"] == vectors["vectors"][index]["message"]
    assert result["size"] == len(vectors["vectors"][index]["message"].encode())
    assert result["direction"] == direction
    assert result["control"]["type"] == kind


@pytest.mark.parametrize("index", [0, 1, 2])
def test_each_reference_vector_decodes(vectors: dict[str, Any], keys_line: str, index: int) -> None:
    result = decode_capture(_capture(vectors, index), KeysFile.parse(keys_line + "\n"))
    _assert_vector(result, vectors, index)


def test_keepalive_vector_shows_the_parsed_os_fields(vectors: dict[str, Any], keys_line: str) -> None:
    result = decode_capture(_capture(vectors, 0), KeysFile.parse(keys_line + "\n"))
    control = result["control"]
    assert isinstance(control, dict)
    assert control["os_name"] == "Ubuntu"
    assert control["os_platform"] == "ubuntu"
    assert control["os_version"] == "22.04.4 LTS"
    assert control["os_codename"] == "Jammy Jellyfish"
    assert (control["os_major"], control["os_minor"], control["os_arch"]) == ("22", "04", "x86_64")
    assert control["version"] == "Wazuh v4.14.7"
    assert control["merged_sum"] == "4a8724b20dee0124ff9656783c490c4e"
    assert control["agent_ip"] == "192.168.56.10"
    assert json.loads(json.dumps(result))["control"]["labels"] == [['"env"', "prod"]]


def test_startup_vector_shows_the_version(vectors: dict[str, Any], keys_line: str) -> None:
    result = decode_capture(_capture(vectors, 1), KeysFile.parse(keys_line + "\n"))
    assert result["control"] == {"type": "startup", "version": "v4.14.7", "version_missing": False}


@pytest.mark.parametrize("index", [0, 1, 2])
def test_command_decodes_each_reference_vector(vectors: dict[str, Any], keys_path: Path, index: int) -> None:
    status, result = _run("--keys", str(keys_path), vectors["vectors"][index]["frame_hex"])
    assert status == 0
    _assert_vector(result, vectors, index)


def test_command_reads_a_raw_file_and_spaced_hex(vectors: dict[str, Any], keys_path: Path) -> None:
    raw = keys_path.parent / "capture.bin"
    raw.write_bytes(_capture(vectors, 0))
    status, from_file = _run("--keys", str(keys_path), "--file", str(raw))
    assert status == 0
    assert from_file["control"]["os_name"] == "Ubuntu"
    spaced = "0x" + " ".join(vectors["vectors"][0]["frame_hex"][i : i + 8] for i in range(0, 604, 8))
    status, from_hex = _run("--keys", str(keys_path), spaced)
    assert status == 0
    assert from_hex == from_file


def test_wrong_key_exits_1_with_a_json_error(vectors: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "client.keys"
    path.write_text(f"001 agent-01 any {OTHER_KEY}\n")
    status, result = _run("--keys", str(path), vectors["vectors"][0]["frame_hex"])
    assert status == 1
    assert result["error"] in WRONG_KEY_REASONS
    assert set(result) == {"error", "detail"}


def test_without_prefix_no_matching_key_among_several_is_wrong_key(vectors: dict[str, Any]) -> None:
    keys = KeysFile.parse(f"001 agent-01 any {OTHER_KEY}\n002 agent-02 10.0.0.2 {'1' * 64}\n")
    with pytest.raises(WireError) as caught:
        decode_capture(_capture(vectors, 1), keys)
    assert caught.value.reason is Reason.WRONG_KEY


def test_without_prefix_every_active_key_is_tried(vectors: dict[str, Any], keys_line: str) -> None:
    keys = KeysFile.parse(f"005 first any {OTHER_KEY}\n006 !gone any {'2' * 64}\n{keys_line}\n")
    result = decode_capture(_capture(vectors, 1), keys)
    assert result["agent"] == {"id": "001", "name": "agent-01", "ip": "any"}


def test_unknown_prefixed_id_exits_1(vectors: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "client.keys"
    path.write_text(f"002 agent-02 any {OTHER_KEY}\n")
    status, result = _run("--keys", str(path), vectors["vectors"][0]["frame_hex"])
    assert status == 1
    assert result["error"] == Reason.UNKNOWN_AGENT.value


def test_a_removed_agent_is_unknown(vectors: dict[str, Any], keys_line: str) -> None:
    keys = KeysFile.parse(keys_line.replace("agent-01", "!agent-01") + "\n")
    with pytest.raises(WireError) as caught:
        decode_capture(_capture(vectors, 0), keys)
    assert caught.value.reason is Reason.UNKNOWN_AGENT
    assert "removed" in caught.value.detail


def test_too_big_tcp_length_exits_1(keys_path: Path) -> None:
    frame = LENGTH.pack(65537) + b"!" * 65537
    raw = keys_path.parent / "big.bin"
    raw.write_bytes(frame)
    status, result = _run("--keys", str(keys_path), "--file", str(raw))
    assert status == 1
    assert result["error"] == Reason.TOO_BIG.value


def test_huge_length_header_with_a_short_body_is_too_big() -> None:
    with pytest.raises(WireError) as caught:
        split_transport(bytes.fromhex("ffffffff") + b"#AES:" + b"\0" * 16)
    assert caught.value.reason is Reason.TOO_BIG


def test_a_truncated_frame_is_refused() -> None:
    with pytest.raises(WireError) as caught:
        split_transport(LENGTH.pack(300) + b"#AES:")
    assert caught.value.reason is Reason.BAD_HEADER


def test_direction_flag_overrides_the_guess(vectors: dict[str, Any], keys_line: str) -> None:
    keys = KeysFile.parse(keys_line + "\n")
    as_manager = decode_capture(_capture(vectors, 0), keys, direction="manager")
    assert as_manager["direction"] == "manager_to_agent"
    assert as_manager["control"]["type"] == "other"  # type: ignore[index]
    as_agent = decode_capture(_capture(vectors, 2), keys, direction="agent")
    assert as_agent["control"]["type"] == "invalid"  # type: ignore[index]  # a keep-alive needs a newline


@pytest.mark.parametrize(
    ("message", "direction", "kind"),
    [
        (b"#!-req 1a2b agent getstate", "manager_to_agent", "request"),
        (b'#!-req 1a2b {"error":0,"data":{}}', "agent_to_manager", "request_reply"),
        (b"#!-req 1a2b ack", "agent_to_manager", "request_reply"),
        (b"#!-req 1a2b err Unrecognized command", "agent_to_manager", "request_reply"),
        (b'#!-err {"message":"Couldn\'t retrieve version"}', "manager_to_agent", "err"),
        (b"#!-force_reconnect", "manager_to_agent", "force_reconnect"),
        (b"#!-agent shutdown ", "agent_to_manager", "shutdown"),
        (b"1:/var/log/syslog:hello", "agent_to_manager", "event"),
    ],
)
def test_auto_direction_tells_requests_from_replies(
    keys_line: str, message: bytes, direction: str, kind: str
) -> None:
    result = decode_capture(_seal(keys_line, message), KeysFile.parse(keys_line + "\n"))
    assert (result["direction"], result["control"]["type"]) == (direction, kind)  # type: ignore[index]


def test_a_prefixed_request_is_always_from_the_agent(keys_line: str) -> None:
    capture = encode_frame(_seal(keys_line, b"#!-req 1a2b agent getstate", prefixed=True))
    result = decode_capture(capture, KeysFile.parse(keys_line + "\n"))
    assert result["transport"] == "tcp"
    assert result["control"] == {"type": "request_reply", "counter": "1a2b", "response": "agent getstate"}


def test_clear_text_ping_is_shown() -> None:
    result = decode_capture(encode_frame(b"#ping"), KeysFile([]))
    assert result["control"] == {"type": "ping"}


def test_hex_input_tolerates_spaces_and_0x() -> None:
    assert parse_hex(" 0x2a01\n 00 00\t") == b"\x2a\x01\x00\x00"
    with pytest.raises(ValueError):
        parse_hex("0x")
