"""Realistic agent events for the simulator: syslog lines, FIM (syscheck) JSON and inventory (dbsync) JSON.

Sizes as real 4.x agents send them: syslog lines of 100-400 bytes, FIM events of 0.5-1.5 KB, inventory
rows of 1-8 KB. A pool of payloads is built once per process (from a fixed seed: runs are comparable)
and reused; each send is still sealed with its own counters, checksum and encryption. The load generator
shares the manager's cores, so the payload is compressed once, when the pool is built, not per send: a
message's zlib stream is a stored block with its checksum and counters (53 bytes), then the payload's
own deflate blocks, then the Adler-32 of the whole, which is as valid a stream as agentd's level 9 one
(any inflater, Wazuh's `uncompress()` included, reads it) and costs a checksum instead of a compression.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
import zlib
from typing import Final

from agentpulse.agent.connection import AgentCodec
from agentpulse.wire.frames import encode_frame
from agentpulse.wire.secure import MAX_MESSAGE, MSG_OVERHEAD

MIXES: Final = ("syslog", "fim", "inventory")
POOL: Final = 64  # payloads per kind
SEED: Final = 1514

_PROGRAMS: Final = ("sshd", "sudo", "systemd", "cron", "kernel", "nginx", "postfix/smtpd", "dockerd")
_WORDS: Final = (
    "session opened for user root by (uid=0)",
    "Accepted publickey for deploy from 10.20.30.40 port 51122 ssh2: RSA SHA256:Xq3mW9",
    "Started Daily apt upgrade and clean activities.",
    "pam_unix(cron:session): session closed for user www-data",
    'GET /api/v1/health HTTP/1.1" 200 17 "-" "kube-probe/1.29"',
    "connect from unknown[203.0.113.9]",
    "Out of memory: Killed process 4242 (java) total-vm:8123456kB",
    'level=info msg="container started" id=3f2a9c',
)


# zlib header (deflate, 32 KiB window), then a stored, non-final block of MSG_OVERHEAD bytes: the checksum
# and the clear header (LEN, NLEN little-endian).
_STREAM_HEAD: Final = b"\x78\x01\x00" + struct.pack("<HH", MSG_OVERHEAD, MSG_OVERHEAD ^ 0xFFFF)
_ADLER: Final = struct.Struct(">I")


def deflated(payload: bytes) -> bytes:
    """The payload's raw deflate blocks (the last one final), to splice after a message's head."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
    return compressor.compress(payload) + compressor.flush()


def seal_event(codec: AgentCodec, payload: bytes, compressed: bytes | None = None) -> bytes:
    """The agent's frame for one event: its own counters and checksum, the payload's deflate blocks
    (`deflated(payload)`, computed here when not given), encrypted as the agent's every message."""
    if not payload or len(payload) > MAX_MESSAGE:
        raise ValueError(f"message length {len(payload)} outside 1..{MAX_MESSAGE}")
    global_counter, local_counter = codec.counter.advance()
    clear_head = b"%05u%010u:%04u:" % (random.getrandbits(16), global_counter, local_counter)
    digest = hashlib.md5(clear_head, usedforsecurity=False)
    digest.update(payload)
    head = digest.hexdigest().encode("ascii") + clear_head
    stream = (
        _STREAM_HEAD
        + head
        + (compressed if compressed is not None else deflated(payload))
        + _ADLER.pack(zlib.adler32(payload, zlib.adler32(head)))
    )
    sealed = codec.cipher.seal_compressed(stream, cipher=codec.cipher_kind, agent_id=codec.prefix)
    return encode_frame(sealed) if codec.tcp else sealed


def _syslog(rng: random.Random, host: str) -> bytes:
    program = rng.choice(_PROGRAMS)
    words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4)))
    line = f"Dec  2 00:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d} {host} {program}[{rng.randint(100, 65000)}]: {words}"
    return f"1:/var/log/{rng.choice(('syslog', 'auth.log', 'messages'))}:{line}".encode()


def _fim(rng: random.Random, host: str) -> bytes:
    path = rng.choice(
        ("/etc/passwd", "/etc/shadow", "/usr/bin/ssh", "/etc/nginx/nginx.conf", "/root/.bashrc")
    )
    attributes = {
        "type": "file",
        "size": rng.randint(10, 10**7),
        "perm": "rw-r--r--",
        "uid": "0",
        "gid": "0",
        "user_name": "root",
        "group_name": "root",
        "inode": rng.randint(1, 10**7),
        "mtime": 1764633600 + rng.randint(0, 86400),
        "hash_md5": f"{rng.getrandbits(128):032x}",
        "hash_sha1": f"{rng.getrandbits(160):040x}",
        "hash_sha256": f"{rng.getrandbits(256):064x}",
        "checksum": f"{rng.getrandbits(160):040x}",
    }
    data = {
        "path": path,
        "version": 2.0,
        "mode": rng.choice(("realtime", "scheduled", "whodata")),
        "type": rng.choice(("added", "modified", "deleted")),
        "timestamp": 1764633600000 + rng.randint(0, 86400000),
        "attributes": attributes,
        "changed_attributes": ["size", "mtime", "md5", "sha1", "sha256"],
        "old_attributes": dict(attributes, size=rng.randint(10, 10**7)),
        "tags": host,
    }
    return b"8:syscheck:" + json.dumps({"type": "event", "data": data}, separators=(",", ":")).encode()


def _inventory(rng: random.Random, host: str) -> bytes:
    rows = []
    for _ in range(rng.randint(1, 17)):  # 0.5 to 8 KB: one package row or a batch of them
        name = f"lib{rng.choice(('ssl', 'curl', 'xml2', 'systemd', 'gnutls', 'krb5'))}{rng.randint(1, 9)}"
        rows.append(
            {
                "name": name,
                "version": f"{rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}-{rng.randint(1, 9)}ubuntu0.{rng.randint(1, 9)}",
                "architecture": "amd64",
                "format": "deb",
                "vendor": "Ubuntu Developers <ubuntu-devel-discuss@lists.ubuntu.com>",
                "description": "shared library " + "x" * rng.randint(20, 150),
                "size": rng.randint(100, 100000),
                "checksum": f"{rng.getrandbits(160):040x}",
                "item_id": f"{rng.getrandbits(160):040x}",
            }
        )
    body = {"type": "dbsync_packages", "data": rows, "operation": "INSERTED", "host": host}
    return b"5:syscollector:" + json.dumps(body, separators=(",", ":")).encode()


_MAKERS: Final = {"syslog": _syslog, "fim": _fim, "inventory": _inventory}


def parse_mix(text: str) -> tuple[str, ...]:
    """`syslog,fim,inventory` -> the kinds; raises ValueError naming an unknown one."""
    kinds = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [kind for kind in kinds if kind not in _MAKERS]
    if unknown or not kinds:
        raise ValueError(
            f"unknown event kind(s) {', '.join(unknown) or '(none)'}: choose from {', '.join(MIXES)}"
        )
    return kinds


def payload_pool(mix: tuple[str, ...], host: str = "sim-host") -> list[bytes]:
    """POOL payloads per kind of the mix, interleaved, from a fixed seed."""
    rng = random.Random(SEED)
    per_kind = [[_MAKERS[kind](rng, host) for _ in range(POOL)] for kind in mix]
    return [payloads[i] for i in range(POOL) for payloads in per_kind]


class EventSchedule:
    """How many events are due: `rate` per running agent, spread round-robin over the running agents."""

    def __init__(self, rate: float, mix: tuple[str, ...]) -> None:
        self.rate = rate  # per agent and second
        self.pool = payload_pool(mix) if rate > 0 else []
        self.compressed = [deflated(payload) for payload in self.pool]
        self._credit = 0.0
        self._next_payload = 0
        self._last = -1.0

    def due(self, now: float, running: int) -> int:
        """How many events to send now (the credit since the last call, whole)."""
        if self._last < 0:
            self._last = now
            return 0
        fleet_rate = self.rate * running
        self._credit = min(self._credit + (now - self._last) * fleet_rate, fleet_rate)  # at most 1 s behind
        self._last = now
        count = int(self._credit)
        self._credit -= count
        return count

    def payload(self) -> bytes:
        return self.next()[0]

    def next(self) -> tuple[bytes, bytes]:
        """The next payload of the pool and its deflate blocks (see `seal_event`)."""
        at = self._next_payload
        self._next_payload = (at + 1) % len(self.pool)
        return self.pool[at], self.compressed[at]
