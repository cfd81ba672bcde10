"""A simulated event is sealed as the agent seals any message (`AgentCodec.seal`): its own counters, the
`!<id>!` prefix where the key wants it, a TCP length prefix, and zlib level 1 instead of the agent's 9."""

from __future__ import annotations

import zlib

from agentpulse.agent.connection import AgentCodec
from agentpulse.simulator.eventgen import seal_event
from agentpulse.wire.frames import FrameDecoder
from agentpulse.wire.keys import parse_line
from agentpulse.wire.secure import AgentCipher, split_header

EVENT = b"1:/var/log/auth.log:" + b"sshd[42]: Accepted publickey for deploy from 10.20.30.40 " * 8


def _opened(codec: AgentCodec, frame: bytes, tcp: bool) -> tuple[str | None, int, bytes]:
    if tcp:
        (frame,) = FrameDecoder().feed(frame)
    key = codec.key
    message = AgentCipher.for_key(key.id, key.name, key.key).open(split_header(frame))
    return message.agent_id, message.local_counter, message.payload


def test_a_simulated_event_opens_as_the_agents_message_with_the_next_counters() -> None:
    key = parse_line("007 web-07 any " + "ab" * 32)
    assert key is not None
    for tcp in (True, False):
        codec = AgentCodec(key, tcp=tcp)
        first, second = seal_event(codec, EVENT), codec.seal(EVENT)
        agent_id, counter, payload = _opened(codec, first, tcp)
        assert (agent_id, payload) == ("007", EVENT)  # `any` is not a single host: the id prefix
        assert _opened(codec, second, tcp)[1] == counter + 1


def test_the_compressor_is_what_the_codec_is_given() -> None:
    key = parse_line("008 web-08 10.0.0.8 " + "cd" * 32)
    assert key is not None
    seen: list[bytes] = []

    def level_0(block: bytes) -> bytes:
        seen.append(block)
        return zlib.compress(block, 0)

    codec = AgentCodec(key, tcp=False)
    frame = codec.seal(EVENT, compressor=level_0)
    assert len(seen) == 1 and seen[0].endswith(EVENT)
    assert _opened(codec, frame, tcp=False)[::2] == (None, EVENT)  # a single host: no prefix
