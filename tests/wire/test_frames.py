"""TCP framing: any chunking gives the same frames, and an oversized length is refused before buffering."""

from __future__ import annotations

import contextlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentpulse.wire.errors import Reason, WireError
from agentpulse.wire.frames import FrameDecoder, encode_frame


@settings(max_examples=300, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=300), max_size=20),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40),
)
def test_any_chunking_gives_the_same_frames(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(payload) for payload in payloads)
    points = sorted({cut % (len(stream) + 1) for cut in cuts} | {0, len(stream)})
    decoder = FrameDecoder()
    frames: list[bytes] = []
    for start, end in itertools.pairwise(points):
        frames += decoder.feed(stream[start:end])
    assert frames == payloads
    assert decoder.buffered == 0


def test_several_frames_in_one_read_are_all_returned() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame(b"a") + encode_frame(b"bc") + encode_frame(b"def")[:5]) == [b"a", b"bc"]
    assert decoder.feed(b"ef") == [b"def"]


def test_length_above_65536_is_refused_as_soon_as_the_header_arrives() -> None:
    decoder = FrameDecoder()
    with pytest.raises(WireError) as caught:
        decoder.feed((65537).to_bytes(4, "little"))
    assert caught.value.reason is Reason.TOO_BIG
    assert decoder.buffered == 0


def test_length_of_exactly_65536_is_accepted() -> None:
    assert FrameDecoder().feed(encode_frame(b"x" * 65536)) == [b"x" * 65536]


def test_clear_drops_a_partial_frame() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_frame(b"x" * 1000)[:500])
    decoder.clear()
    assert decoder.buffered == 0
    assert decoder.feed(encode_frame(b"next")) == [b"next"]


def test_zero_length_frame_is_returned_empty_for_the_session_to_refuse() -> None:
    assert FrameDecoder().feed(b"\x00\x00\x00\x00") == [b""]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=2000))
def test_arbitrary_bytes_raise_only_wire_error(data: bytes) -> None:
    decoder = FrameDecoder()
    with contextlib.suppress(WireError):
        decoder.feed(data)
