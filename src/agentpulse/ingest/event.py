"""One agent event as published: its subject, `Nats-Msg-Id`, JSON body and Wazuh analysisd line.

An agent event is `<queue char>:<location>:<text>` (reference 3.3 step 8). Pure: bytes in, bytes out. The
danger is agent text: it never enters a subject (the id is `%03d`, the kind comes from `kinds.KINDS`),
and it is carried exactly as sent: text that is not UTF-8 goes base64-encoded in a `*_b64` field instead
of being re-encoded. The analysisd line escapes the source as Wazuh's `wstr_escape()` does.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Final

from agentpulse.ingest.kinds import OTHER, kind_of

EVENTS_TOKEN: Final = "events"
MSG_ID_HEADER: Final = "Nats-Msg-Id"
KEEPALIVE_LOCATION: Final = b"keepalive"  # Wazuh's SendMSG drops events whose location starts with it
RECORD_HEAD: Final = struct.Struct("<HHI")  # subject, msg id, body lengths: a spooled record


def wstr_escape(text: bytes) -> bytes:
    """Wazuh's escape of the source part: `|` becomes `||`, `:` becomes `|:`."""
    return text.replace(b"|", b"||").replace(b":", b"|:")


@dataclass(frozen=True, slots=True)
class Source:
    """Who sent it, as client.keys and ossec.conf say (not the agent). The JSON head and the escaped
    analysisd source are built once per agent (`build` runs for every event)."""

    agent_id: int
    name: str  # client.keys, read with surrogateescape
    ip: str  # client.keys IP field (`any`, an address, a network)
    node: str
    head: str = field(init=False, compare=False, repr=False)  # the JSON fields that never change
    origin: bytes = field(init=False, compare=False, repr=False)  # `[<id>] (<name>) <ip>`, escaped
    # The origin as the inside of a JSON string; None when the name is not UTF-8 (the general path).
    origin_json: str | None = field(init=False, compare=False, repr=False)
    id_text: str = field(init=False, compare=False, repr=False)  # `%03d`
    subjects: dict[tuple[str, int], str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        name = self.name.encode("utf-8", "replace").decode("utf-8", "replace")
        head = (
            f'{{"type":"event","agent_id":"{self.agent_id:03d}","name":{encode_basestring(name)},'
            f'"ip":{encode_basestring(self.ip)},"node":{encode_basestring(self.node)},'
        )
        object.__setattr__(self, "head", head)
        origin = f"[{self.agent_id:03d}] ({self.name}) {self.ip}".encode("utf-8", "surrogateescape")
        object.__setattr__(self, "origin", wstr_escape(origin))
        try:
            origin_json: str | None = encode_basestring(self.origin.decode("utf-8"))[1:-1]
        except UnicodeDecodeError:
            origin_json = None
        object.__setattr__(self, "origin_json", origin_json)
        object.__setattr__(self, "id_text", f"{self.agent_id:03d}")
        object.__setattr__(self, "subjects", {})

    def subject(self, prefix: str, queue: int) -> str:
        """The subject of this agent's events of one queue character (cached: a handful per agent)."""
        found = self.subjects.get((prefix, queue))
        if found is None:
            found = self.subjects[(prefix, queue)] = subject_of(prefix, self.agent_id, kind_of(queue))
        return found


@dataclass(frozen=True, slots=True)
class Published:
    """What goes to JetStream for one event."""

    subject: str
    msg_id: str
    body: bytes
    wazuh_line: bytes | None  # None for an event that is not `<q>:<location>:<text>`

    def record(self) -> bytes:
        """The spool's bytes for it (`decode_record` reads them back)."""
        return wire_record(self.subject, self.msg_id, self.body)


# A spooled record is the NATS protocol message itself (HPUB without a reply subject), so the publisher
# sends a batch as one buffer, with no per-event work: see `publisher.py`. Spools written before this
# format hold `RECORD_HEAD` + subject + msg id + body, and `decode_record` reads both (a length of 20,552
# bytes, `HP` little-endian, is no subject agentpulse writes).
WIRE_MARK: Final = b"HPUB "
_HEADER_LEAD: Final = "NATS/1.0\r\nNats-Msg-Id: "
_HEADER_EXTRA: Final = len(_HEADER_LEAD) + 4  # the lead and the two CRLFs after the id


def wire_record(subject: str, msg_id: str, body: bytes) -> bytes:
    headers = len(msg_id) + _HEADER_EXTRA
    return (
        f"HPUB {subject} {headers} {headers + len(body)}\r\n{_HEADER_LEAD}{msg_id}\r\n\r\n".encode()
        + body
        + b"\r\n"
    )


def decode_record(record: bytes | memoryview) -> tuple[str, str, bytes]:
    """(subject, msg id, body) of a spooled record."""
    data = bytes(record)
    if data.startswith(WIRE_MARK):
        line_end = data.index(b"\r\n")
        subject, headers_text, total_text = data[5:line_end].decode().split(" ")
        headers, total = int(headers_text), int(total_text)
        start = line_end + 2
        msg_id = data[start + len(_HEADER_LEAD) : start + headers - 4].decode()
        return subject, msg_id, data[start + headers : start + total]
    subject_len, msg_id_len, body_len = RECORD_HEAD.unpack_from(data)
    at = RECORD_HEAD.size
    subject = data[at : at + subject_len].decode()
    at += subject_len
    msg_id = data[at : at + msg_id_len].decode()
    at += msg_id_len
    return subject, msg_id, data[at : at + body_len]


def subject_of(prefix: str, agent_id: int, kind: str) -> str:
    return f"{prefix}.{EVENTS_TOKEN}.{agent_id:03d}.{kind}"


def msg_id_of(agent_id: int, global_counter: int, local_counter: int) -> str:
    """Unique per event: the agent's own message counters never repeat for one key (reference 3.4)."""
    return f"{agent_id:03d}:{global_counter}:{local_counter}"


def split(payload: bytes) -> tuple[int, bytes, bytes] | None:
    """(queue char, location, text), or None when the payload is not `<q>:<location>:<text>`."""
    if len(payload) < 3 or payload[1] != 0x3A or payload[0] >= 0x80:
        return None
    end = payload.find(b":", 2)
    if end < 0:
        return None
    return payload[0], payload[2:end], payload[end + 1 :]


def is_keepalive_location(payload: bytes) -> bool:
    return payload[2:11] == KEEPALIVE_LOCATION


def wazuh_line(queue: int, source: Source, location: bytes, text: bytes) -> bytes:
    """What Wazuh's remoted writes to analysisd: `<q>:[<id>] (<name>) <ip>-><location>:<text>`."""
    return bytes((queue,)) + b":" + source.origin + b"->" + location + b":" + text


def _inner(data: bytes) -> str | None:
    """The JSON string body (no quotes) of UTF-8 bytes; None when they are not UTF-8."""
    try:
        return encode_basestring(data.decode("utf-8"))[1:-1]
    except UnicodeDecodeError:
        return None


def _field(name: str, inner: str | None, data: bytes) -> str:
    """`"name":"text"` when the bytes are UTF-8, else `"name":null,"name_b64":"..."` (lossless)."""
    if inner is not None:
        return f'"{name}":"{inner}"'
    return f'"{name}":null,"{name}_b64":"{base64.b64encode(data).decode()}"'


_iso_second = -1
_iso_prefix = ""


def iso_utc(at: float) -> str:
    """2025-12-02T00:00:01.250Z; the part down to the second is kept from the last call (one per event)."""
    global _iso_second, _iso_prefix
    second = int(at)
    if second != _iso_second:
        _iso_second = second
        _iso_prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{_iso_prefix}.{int((at - second) * 1000):03d}Z"


def build(
    prefix: str, source: Source, payload: bytes, received: float, counters: tuple[int, int]
) -> Published:
    """The event `payload` (decrypted, as the agent sent it) ready to publish."""
    global_counter, local_counter = counters
    parts = split(payload)
    head = (
        f'{source.head}"received":{received!r},"received_iso":"{iso_utc(received)}",'
        f'"counter":[{global_counter},{local_counter}],'
    )
    if parts is None:
        kind, line = OTHER, None
        text = _field("text", _inner(payload), payload)
        tail = f'"kind":"{OTHER}","format_error":true,"queue":null,"location":null,{text},"wazuh_line":null}}'
    else:
        queue, location, text_bytes = parts
        kind = kind_of(queue)
        line = wazuh_line(queue, source, location, text_bytes)
        location_inner, text_inner = _inner(location), _inner(text_bytes)
        queue_json = encode_basestring(chr(queue))
        if location_inner is not None and text_inner is not None:
            # The line's JSON from the parts already escaped: JSON escapes character by character.
            origin = encode_basestring(source.origin.decode("utf-8", "replace"))[1:-1]
            line_inner: str | None = f"{queue_json[1:-1]}:{origin}->{location_inner}:{text_inner}"
            if "\ufffd" in origin or "�" in origin:  # a name that is not UTF-8: the general path
                line_inner = _inner(line)
        else:
            line_inner = _inner(line)
        tail = (
            f'"kind":"{kind}","queue":{queue_json},{_field("location", location_inner, location)},'
            f"{_field('text', text_inner, text_bytes)},{_field('wazuh_line', line_inner, line)}}}"
        )
    return Published(
        subject_of(prefix, source.agent_id, kind),
        msg_id_of(source.agent_id, global_counter, local_counter),
        (head + tail).encode("utf-8"),
        line,
    )


_QUEUE_JSON: Final = tuple(encode_basestring(chr(byte))[1:-1] for byte in range(0x80))


def build_record(
    prefix: str, source: Source, payload: bytes, received: float, counters: tuple[int, int]
) -> bytes:
    """`build(...).record()` in one pass: the spool record (the NATS message) of one event.

    The common event (`<q>:<location>:<text>`, all UTF-8, a UTF-8 agent name) is decoded once and escaped
    once, by the C encoder, as a whole: JSON escapes character by character, so the escaped payload is
    the queue character's escape, `:`, the escaped location (no `:` in it), `:`, the escaped text. The text then goes into `text` and `wazuh_line` as that
    one escaped string. Anything else takes `build()`, the general path.
    """
    origin = source.origin_json
    if origin is None or len(payload) < 3 or payload[1] != 0x3A or payload[0] >= 0x80:
        return build(prefix, source, payload, received, counters).record()
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return build(prefix, source, payload, received, counters).record()
    escaped = encode_basestring(text)  # with its quotes
    queue = payload[0]
    queue_inner = _QUEUE_JSON[queue]
    queue_end = 1 + len(queue_inner)  # the first separator
    location_end = escaped.find(":", queue_end + 1)
    if location_end < 0:  # no second separator: not `<q>:<location>:<text>`
        return build(prefix, source, payload, received, counters).record()
    global_counter, local_counter = counters
    body = (
        f'{source.head}"received":{received!r},"received_iso":"{iso_utc(received)}",'
        f'"counter":[{global_counter},{local_counter}],"kind":"{kind_of(queue)}","queue":"{queue_inner}",'
        f'"location":"{escaped[queue_end + 1 : location_end]}","text":"{escaped[location_end + 1 : -1]}",'
        f'"wazuh_line":"{queue_inner}:{origin}->{escaped[queue_end + 1 :]}}}'
    )
    msg_id = f"{source.id_text}:{global_counter}:{local_counter}"
    subject = source.subject(prefix, queue)
    headers = len(msg_id) + _HEADER_EXTRA
    if body.isascii():  # O(1) in CPython: then characters are bytes, and the message is one string
        return (
            f"HPUB {subject} {headers} {headers + len(body)}\r\n{_HEADER_LEAD}{msg_id}\r\n\r\n{body}\r\n"
        ).encode()
    return wire_record(subject, msg_id, body.encode("utf-8"))
