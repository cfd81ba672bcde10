"""Secure messages: build and read the encrypted payload of one frame or datagram (docs/protocol.md).

Layout: `[!<id>!]` + (`#AES:` | `:`) + ciphertext of 1-8 `!` bytes + zlib(checksum + clear), where clear is
`%05u%010u:%04u:` (random, global counter, local counter) + the message (see `AgentCipher.seal`). The
danger is untrusted input: `split_header()` and `AgentCipher.open()` bound their work by its length and
raise only WireError.
"""

from __future__ import annotations

import enum
import hashlib
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.decrepit.ciphers.algorithms import Blowfish
from cryptography.hazmat.primitives.ciphers import Cipher as _Cipher
from cryptography.hazmat.primitives.ciphers import algorithms, modes

from agentpulse.wire import keys
from agentpulse.wire.errors import Reason, WireError

OS_MAXSTR = 65536  # the largest frame the manager reads
OS_HEADER_SIZE = 128
MAX_MESSAGE = OS_MAXSTR - OS_HEADER_SIZE  # 65408: the longest message a sender may build
AES_HEADER = b"#AES:"
BLOWFISH_HEADER = b":"
ID_MARK = b"!"
PAD_BYTE = 0x21  # "!"
AES_IV = b"FEDCBA0987654321"
BLOWFISH_IV = bytes.fromhex("fedcba9876543210")
CHECKSUM_LEN = 32
CLEAR_HEADER_LEN = 5 + 10 + 1 + 4 + 1  # rand, global, ':', local, ':'
MSG_OVERHEAD = CHECKSUM_LEN + CLEAR_HEADER_LEN  # 53: shortest valid decompressed block
LOCAL_MAX = 9997  # the local counter runs 1..9997, then the global one goes up
RAND_MAX = 0xFFFF
_ID_DIGITS_MAX = 9


class CipherKind(enum.Enum):
    AES = "aes"
    BLOWFISH = "blowfish"

    @property
    def header(self) -> bytes:
        return AES_HEADER if self is CipherKind.AES else BLOWFISH_HEADER


@dataclass(frozen=True, slots=True)
class Envelope:
    """The clear part of a payload: who says it is sending, and with which cipher."""

    agent_id: str | None  # the `!<id>!` prefix as written, None without prefix
    cipher: CipherKind
    body: bytes  # the ciphertext


@dataclass(frozen=True, slots=True)
class SecureMessage:
    """A decrypted, verified message."""

    agent_id: str | None
    cipher: CipherKind
    rand: int
    global_counter: int
    local_counter: int
    payload: bytes


def split_header(data: bytes) -> Envelope:
    """Read the optional `!<id>!` prefix and the cipher header. Raises WireError(BAD_HEADER|EMPTY)."""
    if not data:
        raise WireError(Reason.EMPTY, "empty payload")
    agent_id: str | None = None
    rest = data
    if data[:1] == ID_MARK:
        end = data.find(ID_MARK, 1, 2 + _ID_DIGITS_MAX)
        digits = data[1:end] if end > 0 else b""
        if not digits or not digits.isdigit():
            raise WireError(Reason.BAD_HEADER, "malformed !<id>! prefix")
        agent_id = digits.decode("ascii")
        rest = data[end + 1 :]
        if not rest:
            raise WireError(Reason.EMPTY, f"nothing after the prefix of agent {agent_id}")
    if rest.startswith(AES_HEADER):
        return Envelope(agent_id, CipherKind.AES, rest[len(AES_HEADER) :])
    if rest[:1] == BLOWFISH_HEADER:
        return Envelope(agent_id, CipherKind.BLOWFISH, rest[1:])
    raise WireError(Reason.BAD_HEADER, "neither '#AES:' nor ':' after the prefix")


def compress(block: bytes) -> bytes:
    """zlib `compress2(..., Z_BEST_COMPRESSION)`: level 9 with the zlib wrapper."""
    return zlib.compress(block, 9)


_STORED_HEADER = b"\x78\x01"  # zlib header: deflate, 32K window, "fastest" level; 0x7801 % 31 == 0
_STORED_BLOCK_MAX = 0xFFFF


def compress_stored(block: bytes) -> bytes:
    """A zlib stream of stored (uncompressed) deflate blocks: what any inflater reads, at a quarter of
    the cost of level 9 for the short replies the manager sends all day (an ack is 66 bytes).
    """
    parts = [_STORED_HEADER]
    for start in range(0, max(len(block), 1), _STORED_BLOCK_MAX):
        chunk = block[start : start + _STORED_BLOCK_MAX]
        final = start + _STORED_BLOCK_MAX >= len(block)
        parts.append(struct.pack("<BHH", final, len(chunk), len(chunk) ^ 0xFFFF))
        parts.append(chunk)
    parts.append(struct.pack(">I", zlib.adler32(block)))
    return b"".join(parts)


def checksum(data: bytes) -> bytes:
    """The message checksum: MD5 of `data` as 32 ASCII hex bytes (`keys.md5hex` is the text form)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest().encode("ascii")


def clear_text(payload: bytes, rand: int, global_counter: int, local_counter: int) -> bytes:
    return b"%05u%010u:%04u:" % (rand, global_counter, local_counter) + payload


def pad(compressed: bytes) -> bytes:
    """Prefix `!` bytes so that the length is a multiple of 8: pad + 1 of them, 1 to 8."""
    padding = 8 - (len(compressed) + 1) % 8
    if padding == 8:
        padding = 0
    return b"!" * (padding + 1) + compressed


class AgentCipher:
    """The cipher contexts of one agent key, prepared once and reused for every message.

    Built once per agent because rebuilding the AES key schedule per message is a measurable cost on the
    hot path.
    """

    __slots__ = ("_aes", "_blowfish")

    def __init__(self, aes_key: bytes, blowfish_key: bytes) -> None:
        self._aes = _Cipher(algorithms.AES(aes_key), modes.CBC(AES_IV))
        self._blowfish = _Cipher(Blowfish(blowfish_key), modes.CBC(BLOWFISH_IV))

    @classmethod
    def for_key(cls, agent_id: str, name: str, raw_key: str) -> AgentCipher:
        return cls(keys.aes_key(raw_key), keys.blowfish_key(agent_id, name, raw_key))

    def seal(
        self,
        payload: bytes,
        *,
        cipher: CipherKind,
        rand: int,
        global_counter: int,
        local_counter: int,
        agent_id: str | None = None,
        compressor: Callable[[bytes], bytes] = compress,
    ) -> bytes:
        """Build a payload (no TCP length prefix). `agent_id` adds the `!<id>!` prefix.

        The plaintext of the ciphertext is 1-8 `!` bytes of padding + zlib(level 9, or `compressor`) of
        `checksum(clear) + clear`, where clear = `%05u%010u:%04u:` (random, global counter, local counter)
        + the message; AES adds PKCS#7 padding on top.
        """
        if not payload or len(payload) > MAX_MESSAGE:
            raise ValueError(f"message length {len(payload)} outside 1..{MAX_MESSAGE}")
        clear = clear_text(payload, rand, global_counter, local_counter)
        return self.seal_compressed(compressor(checksum(clear) + clear), cipher=cipher, agent_id=agent_id)

    def seal_compressed(self, compressed: bytes, *, cipher: CipherKind, agent_id: str | None = None) -> bytes:
        """`seal` from the zlib stream of `checksum(clear) + clear` on (for a sender that builds it
        another way: the simulator splices a payload compressed once into each message's stream)."""
        buffer = pad(compressed)
        if cipher is CipherKind.AES:
            padding = 16 - len(buffer) % 16  # PKCS#7 adds 1..16 bytes
            buffer += bytes((padding,)) * padding
            encryptor = self._aes.encryptor()
        else:
            encryptor = self._blowfish.encryptor()
        body = encryptor.update(buffer) + encryptor.finalize()
        prefix = b"!%s!" % agent_id.encode("ascii") if agent_id is not None else b""
        return prefix + cipher.header + body

    def open(self, envelope: Envelope) -> SecureMessage:
        """Decrypt and verify. Raises WireError: BAD_PADDING, WRONG_KEY, CORRUPT or CHECKSUM_MISMATCH.

        The envelope comes from an unauthenticated peer: the work done is bounded by its length (inflating
        stops at OS_MAXSTR bytes) and nothing but WireError leaves.
        """
        clear = self._decrypt(envelope.cipher, envelope.body)
        if clear[:1] != b"!":
            if clear[:1] == BLOWFISH_HEADER:
                raise WireError(Reason.CORRUPT, "legacy uncompressed format is not supported")
            raise WireError(Reason.WRONG_KEY, "decrypted text does not start with the padding")
        block = _inflate(clear.lstrip(b"!"))
        if len(block) < MSG_OVERHEAD:
            raise WireError(Reason.CORRUPT, f"message of {len(block)} bytes is shorter than {MSG_OVERHEAD}")
        if checksum(block[CHECKSUM_LEN:]) != block[:CHECKSUM_LEN]:
            raise WireError(Reason.CHECKSUM_MISMATCH)
        header = block[CHECKSUM_LEN:MSG_OVERHEAD]
        if header[15:16] != b":" or header[20:21] != b":":
            raise WireError(Reason.CORRUPT, "counter separators missing")
        rand, global_text, local_text = header[:5], header[5:15], header[16:20]
        if not (rand.isdigit() and global_text.isdigit() and local_text.isdigit()):
            raise WireError(Reason.CORRUPT, "counters are not decimal")
        return SecureMessage(
            envelope.agent_id,
            envelope.cipher,
            int(rand),
            int(global_text),
            int(local_text),
            block[MSG_OVERHEAD:],
        )

    def _decrypt(self, cipher: CipherKind, body: bytes) -> bytes:
        if cipher is CipherKind.AES:
            if not body or len(body) % 16:
                raise WireError(Reason.CORRUPT, f"AES ciphertext of {len(body)} bytes")
            decryptor = self._aes.decryptor()
            clear = decryptor.update(body) + decryptor.finalize()
            padding = clear[-1]
            if not 1 <= padding <= 16 or clear[-padding:] != bytes((padding,)) * padding:
                raise WireError(Reason.BAD_PADDING, "invalid PKCS#7 padding (wrong key or corrupt payload)")
            return clear[:-padding]
        if not body or len(body) % 8:
            raise WireError(Reason.CORRUPT, f"Blowfish ciphertext of {len(body)} bytes")
        decryptor = self._blowfish.decryptor()
        return decryptor.update(body) + decryptor.finalize()


def _inflate(data: bytes) -> bytes:
    """zlib-decompress into at most OS_MAXSTR bytes, ignoring bytes after the stream like uncompress()."""
    inflater = zlib.decompressobj()
    try:
        block = inflater.decompress(data, OS_MAXSTR)
    except zlib.error as exc:
        raise WireError(Reason.CORRUPT, f"zlib: {exc}") from None
    if inflater.unconsumed_tail:
        raise WireError(Reason.CORRUPT, f"decompressed message longer than {OS_MAXSTR} bytes")
    if not inflater.eof:
        raise WireError(Reason.CORRUPT, "truncated zlib stream")
    return block
