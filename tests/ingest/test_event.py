"""Event payloads: exact bytes (base64 twin for non-UTF-8), subject from the table, Wazuh line, msg id."""

from __future__ import annotations

import base64
import json

from agentpulse.ingest.event import Source, build, decode_record, is_keepalive_location
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
