"""The Wazuh 4.x worked examples (tests/data/reference/vectors.json), decoded and re-encoded byte for byte."""

from __future__ import annotations

from typing import Any

import pytest

from agentpulse.wire import control, keys
from agentpulse.wire.frames import FrameDecoder, encode_frame
from agentpulse.wire.secure import AgentCipher, CipherKind, split_header


def _entry(vectors: dict[str, Any]) -> keys.AgentKey:
    entry = keys.KeysFile.parse(vectors["client_keys_line"] + "\n").by_id("001")
    assert entry is not None
    return entry


def _payload(vector: dict[str, Any]) -> bytes:
    raw = bytes.fromhex(vector["frame_hex"])
    if vector["transport"] == "udp":
        return raw
    frames = FrameDecoder().feed(raw)
    assert len(frames) == 1
    return frames[0]


def test_key_derivation_matches_reference(vectors: dict[str, Any]) -> None:
    entry = _entry(vectors)
    derived = vectors["derived"]
    assert keys.md5hex(entry.name) == derived["md5_name"]
    assert keys.md5hex(entry.id) == derived["md5_id"]
    assert keys.encryption_key(entry.id, entry.name, entry.key) == derived["encryption_key_47"]
    assert keys.aes_key(entry.key) == derived["aes_key_ascii"].encode()
    assert len(derived["encryption_key_47"]) == 47


@pytest.mark.parametrize("index", [0, 1, 2])
def test_vector_decodes_byte_for_byte(vectors: dict[str, Any], index: int) -> None:
    vector = vectors["vectors"][index]
    entry = _entry(vectors)
    envelope = split_header(_payload(vector))
    assert envelope.agent_id == ("001" if vector["id_prefix"] else None)
    assert envelope.cipher is CipherKind(vector["cipher"])
    message = AgentCipher.for_key(entry.id, entry.name, entry.key).open(envelope)
    assert message.rand == vector["rand"]
    assert message.global_counter == vector["global"]
    assert message.local_counter == vector["local"]
    assert message.payload == vector["message"].encode()


@pytest.mark.parametrize("index", [0, 1, 2])
def test_vector_reencodes_identically(vectors: dict[str, Any], index: int) -> None:
    vector = vectors["vectors"][index]
    entry = _entry(vectors)
    sealed = AgentCipher.for_key(entry.id, entry.name, entry.key).seal(
        vector["message"].encode(),
        cipher=CipherKind(vector["cipher"]),
        rand=vector["rand"],
        global_counter=vector["global"],
        local_counter=vector["local"],
        agent_id="001" if vector["id_prefix"] else None,
    )
    expected = bytes.fromhex(vector["frame_hex"])
    assert (encode_frame(sealed) if vector["transport"] == "tcp" else sealed) == expected


def test_keepalive_vector_yields_the_reference_db_columns(vectors: dict[str, Any]) -> None:
    message = control.parse_from_agent(vectors["vectors"][0]["message"].encode())
    assert message == control.Keepalive(
        uname="Linux |agent-01 |5.15.0-105-generic |#115-Ubuntu SMP Mon Apr 15 09:52:04 UTC 2024 |x86_64",
        version="Wazuh v4.14.7",
        config_sum="ab73af41699f13fdd81903b5f23d8d00",
        merged_sum="4a8724b20dee0124ff9656783c490c4e",
        agent_ip="192.168.56.10",
        labels=(('"env"', "prod"),),
        os_name="Ubuntu",
        os_platform="ubuntu",
        os_version="22.04.4 LTS",
        os_codename="Jammy Jellyfish",
        os_major="22",
        os_minor="04",
        os_arch="x86_64",
    )


def test_startup_vector_carries_the_version(vectors: dict[str, Any]) -> None:
    message = control.parse_from_agent(vectors["vectors"][1]["message"].encode())
    assert message == control.Startup("v4.14.7")


def test_ack_vector_is_an_ack(vectors: dict[str, Any]) -> None:
    assert control.parse_from_manager(vectors["vectors"][2]["message"].encode()) == control.Ack()
