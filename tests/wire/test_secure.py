"""Secure messages: round trips for any input, and one typed error for every way a message can be bad."""

from __future__ import annotations

import contextlib
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentpulse.wire.errors import Reason, WireError
from agentpulse.wire.secure import MAX_MESSAGE, AgentCipher, CipherKind, compress_stored, split_header

KEY = "9a1b8c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"
CIPHER = AgentCipher.for_key("001", "agent-01", KEY)
names = st.from_regex(r"[A-Za-z0-9_.\-]{2,32}", fullmatch=True)
ids = st.integers(0, 99999).map(lambda n: f"{n:03d}")


def _seal(payload: bytes, cipher: CipherKind = CipherKind.AES, agent_id: str | None = None) -> bytes:
    return CIPHER.seal(payload, cipher=cipher, rand=1, global_counter=2, local_counter=3, agent_id=agent_id)


def _reason(data: bytes, cipher: AgentCipher = CIPHER) -> Reason:
    with pytest.raises(WireError) as caught:
        cipher.open(split_header(data))
    return caught.value.reason


@settings(max_examples=200, deadline=None)
@given(
    payload=st.binary(min_size=1, max_size=2000),
    agent_id=ids,
    name=names,
    raw_key=st.text(min_size=1, max_size=64).filter(lambda s: "\n" not in s),
    cipher=st.sampled_from(CipherKind),
    prefixed=st.booleans(),
    rand=st.integers(0, 0xFFFF),
    global_counter=st.integers(0, 0xFFFFFFFF),
    local_counter=st.integers(1, 9997),
)
def test_seal_then_open_returns_the_input(
    payload: bytes,
    agent_id: str,
    name: str,
    raw_key: str,
    cipher: CipherKind,
    prefixed: bool,
    rand: int,
    global_counter: int,
    local_counter: int,
) -> None:
    agent_cipher = AgentCipher.for_key(agent_id, name, raw_key)
    sealed = agent_cipher.seal(
        payload,
        cipher=cipher,
        rand=rand,
        global_counter=global_counter,
        local_counter=local_counter,
        agent_id=agent_id if prefixed else None,
    )
    message = agent_cipher.open(split_header(sealed))
    assert (message.payload, message.cipher, message.agent_id) == (
        payload,
        cipher,
        agent_id if prefixed else None,
    )
    assert (message.rand, message.global_counter, message.local_counter) == (
        rand,
        global_counter,
        local_counter,
    )


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_wire_error(data: bytes) -> None:
    with contextlib.suppress(WireError):
        CIPHER.open(split_header(data))


@settings(max_examples=300, deadline=None)
@given(body=st.binary(max_size=400), cipher=st.sampled_from(CipherKind))
def test_arbitrary_ciphertext_after_a_valid_header_raises_only_wire_error(
    body: bytes, cipher: CipherKind
) -> None:
    with contextlib.suppress(WireError):
        CIPHER.open(split_header(b"!001!" + cipher.header + body))


def test_message_sealed_with_another_key_is_refused_as_wrong_key_or_bad_padding() -> None:
    other = AgentCipher.for_key("001", "agent-01", "f" * 64)
    for index in range(20):
        sealed = other.seal(
            b"#!-agent startup ", cipher=CipherKind.AES, rand=index, global_counter=0, local_counter=1
        )
        assert _reason(sealed) in (Reason.BAD_PADDING, Reason.WRONG_KEY)


def test_blowfish_message_with_wrong_key_is_refused_as_wrong_key() -> None:
    other = AgentCipher.for_key("001", "agent-01", "f" * 64)
    sealed = other.seal(b"hello", cipher=CipherKind.BLOWFISH, rand=1, global_counter=0, local_counter=1)
    assert _reason(sealed) in (Reason.WRONG_KEY, Reason.CORRUPT)


def test_flipped_bit_in_compressed_data_is_corrupt_or_checksum_mismatch() -> None:
    sealed = bytearray(_seal(b"x" * 200))
    sealed[-20] ^= 0x01  # the last two blocks: damages the tail of the plaintext, padding stays valid
    assert _reason(bytes(sealed)) in (Reason.CORRUPT, Reason.CHECKSUM_MISMATCH, Reason.BAD_PADDING)


def _seal_raw(block: bytes) -> bytes:
    """Encrypt an arbitrary compressed block the way seal() does, to forge bad contents."""
    from agentpulse.wire.secure import pad

    buffer = pad(zlib.compress(block, 9))
    padding = 16 - len(buffer) % 16
    buffer += bytes((padding,)) * padding
    encryptor = CIPHER._aes.encryptor()
    return b"#AES:" + encryptor.update(buffer) + encryptor.finalize()


def test_checksum_mismatch_is_named() -> None:
    clear = b"123450000000000:0001:#!-agent ack "
    assert _reason(_seal_raw(b"0" * 32 + clear)) is Reason.CHECKSUM_MISMATCH


def test_message_shorter_than_the_overhead_is_corrupt() -> None:
    assert _reason(_seal_raw(b"short")) is Reason.CORRUPT


def test_bytes_after_the_zlib_stream_are_tolerated() -> None:
    from agentpulse.wire.secure import checksum, clear_text

    clear = clear_text(b"#!-agent ack ", 1, 0, 1)
    compressed = zlib.compress(checksum(clear) + clear, 9) + b"trailing"
    data = _seal_raw_compressed(compressed)
    assert CIPHER.open(split_header(data)).payload == b"#!-agent ack "


def _seal_raw_compressed(compressed: bytes) -> bytes:
    from agentpulse.wire.secure import pad

    buffer = pad(compressed)
    padding = 16 - len(buffer) % 16
    buffer += bytes((padding,)) * padding
    encryptor = CIPHER._aes.encryptor()
    return b"#AES:" + encryptor.update(buffer) + encryptor.finalize()


def test_decompression_bomb_is_refused_as_corrupt() -> None:
    from agentpulse.wire.secure import checksum, clear_text

    clear = clear_text(b"#!-" + b"a" * 200_000, 1, 0, 1)
    data = _seal_raw_compressed(zlib.compress(checksum(clear) + clear, 9))
    assert _reason(data) is Reason.CORRUPT


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", Reason.EMPTY),
        (b"!001!", Reason.EMPTY),
        (b"!abc!#AES:xxxx", Reason.BAD_HEADER),
        (b"!0011234567890!#AES:", Reason.BAD_HEADER),
        (b"!001", Reason.BAD_HEADER),
        (b"#XYZ:abc", Reason.BAD_HEADER),
        (b"#AES:" + b"\x00" * 15, Reason.CORRUPT),
        (b":" + b"\x00" * 7, Reason.CORRUPT),
    ],
)
def test_malformed_payloads_name_their_reason(data: bytes, reason: Reason) -> None:
    assert _reason(data) is reason


def test_legacy_uncompressed_format_is_refused_with_a_clear_reason() -> None:
    encryptor = CIPHER._blowfish.encryptor()
    data = b":" + encryptor.update(b":" + b"a" * 63) + encryptor.finalize()
    with pytest.raises(WireError, match="legacy"):
        CIPHER.open(split_header(data))


def test_empty_and_oversized_messages_cannot_be_sealed() -> None:
    with pytest.raises(ValueError):
        _seal(b"")
    with pytest.raises(ValueError):
        _seal(b"a" * (MAX_MESSAGE + 1))
    assert CIPHER.open(split_header(_seal(b"a" * MAX_MESSAGE))).payload == b"a" * MAX_MESSAGE


@settings(max_examples=200, deadline=None)
@given(block=st.binary(max_size=200_000))
def test_stored_block_zlib_stream_inflates_to_its_input(block: bytes) -> None:
    assert zlib.decompress(compress_stored(block)) == block


def test_reply_sealed_with_stored_blocks_opens_like_any_other() -> None:
    sealed = CIPHER.seal(
        b"#!-agent ack ",
        cipher=CipherKind.BLOWFISH,
        rand=9,
        global_counter=1,
        local_counter=2,
        compressor=compress_stored,
    )
    assert CIPHER.open(split_header(sealed)).payload == b"#!-agent ack "
