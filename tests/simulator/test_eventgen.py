"""The simulator's event frames: each payload is compressed once and spliced into every message's zlib
stream, and each message is still a valid Wazuh frame with its own counters and checksum, which the
manager's decoder and a plain zlib inflater both read."""

from __future__ import annotations

import zlib

from agentpulse.agent.connection import AgentCodec
from agentpulse.simulator.eventgen import EventSchedule, deflated, seal_event
from agentpulse.wire.frames import FrameDecoder
from agentpulse.wire.keys import KeysFile, parse_line
from agentpulse.wire.secure import MSG_OVERHEAD, AgentCipher, CipherKind, split_header

KEYS = KeysFile.parse("001 web-01 any k1\n002 web-02 10.0.0.2 k2\n")


def test_spliced_frames_open_as_the_agent_sent_them_with_rising_counters() -> None:
    schedule = EventSchedule(1.0, ("syslog", "fim", "inventory"))
    for number, kind in ((1, CipherKind.AES), (2, CipherKind.BLOWFISH)):
        key = KEYS.by_id(number)
        assert key is not None
        codec = AgentCodec(key, cipher_kind=kind)
        manager_side = AgentCodec(key).cipher  # the manager's cipher contexts for the same key
        seen = []
        for _ in range(len(schedule.pool)):
            payload, compressed = schedule.next()
            (frame,) = FrameDecoder().feed(seal_event(codec, payload, compressed))
            message = manager_side.open(split_header(frame))
            assert message.payload == payload
            seen.append((message.global_counter, message.local_counter))
        assert seen == sorted(set(seen)) and len(seen) == len(schedule.pool)


def test_the_stream_is_plain_zlib_and_compressing_on_the_fly_gives_the_same_message() -> None:
    key = KEYS.by_id(1)
    assert key is not None
    payload = b"1:/var/log/syslog:" + b"repeated text " * 200
    one, two = AgentCodec(key), AgentCodec(key)
    cipher = one.cipher
    frame = seal_event(one, payload, deflated(payload))[4:]
    same = seal_event(two, payload)[4:]  # computes the deflate blocks itself
    opened = cipher.open(split_header(frame))
    assert opened.payload == cipher.open(split_header(same)).payload == payload
    # The clear text inflates with zlib itself (what Wazuh's uncompress() does): 53 bytes of head first.
    clear = cipher._decrypt(CipherKind.AES, split_header(frame).body)  # the test looks inside the envelope
    block = zlib.decompress(clear.lstrip(b"!"))
    assert block[MSG_OVERHEAD:] == payload


CODEC_EVENT = b"1:/var/log/auth.log:" + b"sshd[42]: Accepted publickey for deploy from 10.20.30.40 " * 8


def _opened_codec(codec: AgentCodec, frame: bytes, tcp: bool) -> tuple[str | None, int, bytes]:
    if tcp:
        (frame,) = FrameDecoder().feed(frame)
    key = codec.key
    message = AgentCipher.for_key(key.id, key.name, key.key).open(split_header(frame))
    return message.agent_id, message.local_counter, message.payload


def test_the_compressor_is_what_the_codec_is_given() -> None:
    key = parse_line("008 web-08 10.0.0.8 " + "cd" * 32)
    assert key is not None
    seen: list[bytes] = []

    def level_0(block: bytes) -> bytes:
        seen.append(block)
        return zlib.compress(block, 0)

    codec = AgentCodec(key, tcp=False)
    frame = codec.seal(CODEC_EVENT, compressor=level_0)
    assert len(seen) == 1 and seen[0].endswith(CODEC_EVENT)
    assert _opened_codec(codec, frame, tcp=False)[::2] == (None, CODEC_EVENT)  # a single host: no prefix
