"""Event payloads: exact bytes (base64 twin for non-UTF-8), subject from the table, Wazuh line, msg id."""

from __future__ import annotations

import base64
import json

from agentpulse.ingest.event import (
    RECORD_HEAD,
    Source,
    build,
    build_record,
    decode_record,
    is_keepalive_location,
)
from agentpulse.ingest.kinds import KINDS, kind_of

SOURCE = Source(5, "web|01", "10.0.0.0/24", "node01")


def test_utf8_event() -> None:
    event = build("agent", SOURCE, '8:syscheck:{"p":"é"}'.encode(), 1.5, (7, 9))
    body = json.loads(event.body)
    assert event.subject == "agent.events.005.syscheck" and event.msg_id == "005:7:9"
    assert (body["queue"], body["location"], body["text"]) == ("8", "syscheck", '{"p":"é"}')
    assert body["wazuh_line"] == '8:[005] (web||01) 10.0.0.0/24->syscheck:{"p":"é"}'
    assert body["counter"] == [7, 9] and body["received"] == 1.5
    assert decode_record(event.record()) == (event.subject, event.msg_id, event.body)


def test_non_utf8_text_is_carried_in_base64() -> None:
    event = build("agent", SOURCE, b"1:/var/log/\xff:caf\xe9", 0.0, (1, 1))
    body = json.loads(event.body)
    assert body["location"] is None and base64.b64decode(body["location_b64"]) == b"/var/log/\xff"
    assert body["text"] is None and base64.b64decode(body["text_b64"]) == b"caf\xe9"
    assert base64.b64decode(body["wazuh_line_b64"]).endswith(b"->/var/log/\xff:caf\xe9")


def test_malformed_event_is_other_with_its_whole_payload() -> None:
    event = build("agent", SOURCE, b"\xffno structure", 0.0, (1, 2))
    body = json.loads(event.body)
    assert event.subject == "agent.events.005.other" and event.wazuh_line is None
    assert body["format_error"] is True and base64.b64decode(body["text_b64"]) == b"\xffno structure"


def test_kind_table_and_keepalive_location() -> None:
    assert kind_of(ord("1")) == "logcollector" and kind_of(ord("p")) == "sca" and kind_of(ord("Z")) == "other"
    assert all(kind.isalpha() for kind in KINDS.values())
    assert is_keepalive_location(b"1:keepalive:x") and not is_keepalive_location(b"1:/var/log/keepalive:x")


SHAPES = [
    b'8:syscheck:{"path":"/etc/passwd","a\\\\b":"\\u00e9"}',
    "1:/var/log/syslog:Dec  2 host sshd[1]: é ✓ \t tab \x01 ctl".encode(),
    b"1:/var/log/x:",  # empty text
    b"::loc:text",  # the queue character is a colon
    b'":loc:text',  # ... or a quote, escaped in JSON
    b"1:loc:a:b:c",  # colons in the text
    b"1:/var/log/\xff:caf\xe9",  # not UTF-8
    b"1:/var/log/ok:caf\xe9",
    b"\xffno structure",
    b"1:no second colon",
    b"ab",
]


def test_build_record_is_the_record_of_build_for_every_shape() -> None:
    sources = [SOURCE, Source(7, "plain", "any", "n"), Source(8, "caf\udce9", "any", "n")]  # not UTF-8
    for source in sources:
        for payload in SHAPES:
            expected = build("agent", source, payload, 1764633601.25, (3, 4)).record()
            assert build_record("agent", source, payload, 1764633601.25, (3, 4)) == expected, payload


def test_a_record_is_the_nats_message_and_old_spool_records_still_read() -> None:
    event = build("agent", SOURCE, b"1:/var/log/syslog:hello", 2.0, (1, 2))
    record = build_record("agent", SOURCE, b"1:/var/log/syslog:hello", 2.0, (1, 2))
    line, rest = record.split(b"\r\n", 1)
    op, subject, header_len, total_len = line.split(b" ")
    assert (op, subject) == (b"HPUB", b"agent.events.005.logcollector")
    assert rest[: int(header_len)] == b"NATS/1.0\r\nNats-Msg-Id: 005:1:2\r\n\r\n"
    assert rest[int(header_len) : int(total_len)] == event.body and rest[int(total_len) :] == b"\r\n"
    subject_b, msg_id_b = event.subject.encode(), event.msg_id.encode()
    old = RECORD_HEAD.pack(len(subject_b), len(msg_id_b), len(event.body)) + subject_b + msg_id_b + event.body
    assert decode_record(old) == decode_record(record) == (event.subject, event.msg_id, event.body)
