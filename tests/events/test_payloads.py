"""Subjects and bodies of the events: numeric subjects only, capped sizes, the documented fields."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentpulse.events import payloads
from agentpulse.records import TransitionRow
from agentpulse.status import ConnectionStatus, RowReason, StatusCode

ORIGIN = payloads.Origin(node="node01", manager_host="manager.example")
ROW = TransitionRow(
    agent_id=7,
    seq=3,
    from_status=ConnectionStatus.ACTIVE,
    to_status=ConnectionStatus.DISCONNECTED,
    code=StatusCode.SHUTDOWN_RECEIVED,
    at=1_700_000_000.25,
    last_keepalive=1_699_999_990.0,
)
HOSTILE = 'agent.status.>*\x00 "\\\n\u202e' * 500  # subject wildcards, NUL, quotes, bidi override, long


def keepalive_with_ip(ip: str) -> payloads.KeepaliveFacts:
    return payloads.KeepaliveFacts(7, 1_700_000_000.5, 12, ConnectionStatus.ACTIVE, ip, "Wazuh v4.14.7")


def test_subjects_and_ids_are_the_numeric_agent_id_formatted_03d() -> None:
    assert payloads.status_subject("agent", 7) == "agent.status.007"
    assert payloads.keepalive_subject("xdr.fleet", 12345) == "xdr.fleet.keepalive.12345"
    assert payloads.status_msg_id(7, 3) == "007:3"
    assert payloads.kv_key(0) == "000"
    with pytest.raises(ValueError):
        payloads.status_subject("agent", -1)


def test_the_relay_reads_back_the_sequence_of_its_own_msg_ids_and_event_bodies_only() -> None:
    """What events/ordered.py reads back from the stream (a msg id) and the bucket (a body)."""
    _, msg_id, body = payloads.outbox_row("agent", ROW, "web-01", ORIGIN)
    assert payloads.parse_status_msg_id(msg_id) == (7, 3)
    assert payloads.sequence_of_status_event(body) == 3
    for other in ("", "007", "007:", ":3", "7:x", "abc:1", "007:3:1"):
        assert payloads.parse_status_msg_id(other) is None, other
    for unreadable in (None, b"", b"[]", b"{}", b"not json", b'{"sequence":"3"}', b'{"sequence":true}'):
        assert payloads.sequence_of_status_event(unreadable) is None, unreadable


def test_agent_text_never_reaches_the_subject() -> None:
    subject, msg_id, body = payloads.outbox_row("agent", ROW, HOSTILE, ORIGIN)
    assert subject == "agent.status.007"
    assert msg_id == "007:3"
    assert json.loads(body)["name"].startswith("agent.status.>*")


def test_status_event_carries_the_documented_fields() -> None:
    event = json.loads(payloads.status_event(ROW, "web-01", ORIGIN))
    assert event == {
        "type": "status",
        "agent_id": "007",
        "name": "web-01",
        "previous": "active",
        "status": "disconnected",
        "status_code": 3,
        "reason": "shutdown message received",
        "at": 1_700_000_000.25,
        "at_iso": "2023-11-14T22:13:20.250Z",
        "last_keepalive": 1_699_999_990.0,
        "sequence": 3,
        "node": "node01",
        "manager_host": "manager.example",
    }


def test_status_event_of_an_agent_without_name_or_keepalive() -> None:
    row = TransitionRow(
        1, 1, ConnectionStatus.NEVER_CONNECTED, ConnectionStatus.PENDING, StatusCode.NONE, 0.0, None
    )
    event = json.loads(payloads.status_event(row, None, ORIGIN))
    assert (event["name"], event["last_keepalive"], event["at_iso"]) == (
        None,
        None,
        "1970-01-01T00:00:00.000Z",
    )


def test_keepalive_event_carries_the_documented_fields() -> None:
    facts = payloads.KeepaliveFacts(
        7, 1_700_000_000.5, 12, ConnectionStatus.ACTIVE, "10.0.0.7", "Wazuh v4.14.7"
    )
    event = json.loads(payloads.keepalive_event(facts, "web-01", 1_700_000_000_000, ORIGIN))
    assert event == {
        "type": "keepalive",
        "agent_id": "007",
        "name": "web-01",
        "ip": "10.0.0.7",
        "version": "Wazuh v4.14.7",
        "status": "active",
        "last_keepalive": 1_700_000_000.5,
        "sequence": 12,
        "run": 1_700_000_000_000,
        "node": "node01",
    }


def test_long_agent_strings_are_cut_to_the_text_cap() -> None:
    event = json.loads(payloads.keepalive_event(keepalive_with_ip("1" * 10_000), "n" * 10_000, 1, ORIGIN))
    assert len(event["ip"]) == len(event["name"]) == payloads.TEXT_CAPS[0]


@pytest.mark.parametrize("text", ["x", "\x01", "\u202e", "\U0001f600", '"'])
def test_no_event_exceeds_the_size_cap_whatever_the_strings(text: str) -> None:
    huge = text * 100_000
    origin = payloads.Origin(huge, huge)
    bodies = [
        payloads.status_event(ROW, huge, origin),
        payloads.keepalive_event(
            payloads.KeepaliveFacts(7, 1.0, 1, ConnectionStatus.ACTIVE, huge, huge), huge, 1, origin
        ),
    ]
    for body in bodies:
        assert len(body) <= payloads.MAX_EVENT_BYTES
        assert json.loads(body)["agent_id"] == "007"


def test_events_are_compact_json() -> None:
    body = payloads.status_event(ROW, "web-01", ORIGIN)
    assert b": " not in body and b", " not in body
    assert len(body) < 400


def reference_keepalive_event(facts: payloads.KeepaliveFacts, name: str | None, run: int, node: str) -> bytes:
    """What the hand-written encoding must equal: the documented dict, dumped compact."""
    cap = payloads.TEXT_CAPS[0]

    def cut(text: str | None) -> str | None:
        return None if text is None else text[:cap]

    body = {
        "type": "keepalive",
        "agent_id": f"{facts.agent_id:03d}",
        "name": cut(name),
        "ip": cut(facts.ip),
        "version": cut(facts.version),
        "status": facts.status.value,
        "last_keepalive": facts.at,
        "sequence": facts.sequence,
        "run": run,
        "node": cut(node),
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


texts = st.none() | st.text(max_size=300)


@settings(max_examples=300, deadline=None)
@given(
    agent_id=st.integers(0, 10**6),
    at=st.floats(0, 4e9, allow_nan=False),
    sequence=st.integers(1, 2**63),
    status=st.sampled_from(list(ConnectionStatus)),
    ip=texts,
    version=texts,
    name=texts,
    node=st.text(max_size=300),
)
def test_keepalive_event_bytes_equal_the_documented_dict(
    agent_id: int,
    at: float,
    sequence: int,
    status: ConnectionStatus,
    ip: str | None,
    version: str | None,
    name: str | None,
    node: str,
) -> None:
    facts = payloads.KeepaliveFacts(agent_id, at, sequence, status, ip, version)
    body = payloads.keepalive_event(facts, name, 1_700_000_000_000, payloads.Origin(node, "host"))
    expected = reference_keepalive_event(facts, name, 1_700_000_000_000, node)
    if len(expected) <= payloads.MAX_EVENT_BYTES:
        assert body == expected
    else:
        assert len(body) <= payloads.MAX_EVENT_BYTES


def reference_status_event(row: TransitionRow, name: str | None, node: str, host: str) -> bytes:
    """What the hand-written status event must equal: the documented dict, dumped compact."""
    cap = payloads.TEXT_CAPS[0]

    def cut(text: str | None) -> str | None:
        return None if text is None else text[:cap]

    body = {
        "type": "status",
        "agent_id": f"{row.agent_id:03d}",
        "name": cut(name),
        "previous": row.from_status.value,
        "status": row.to_status.value,
        "status_code": int(row.code),
        "reason": row.reason_text,
        "at": row.at,
        "at_iso": payloads.iso_utc(row.at),
        "last_keepalive": row.last_keepalive,
        "sequence": row.seq,
        "node": cut(node),
        "manager_host": cut(host),
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


@settings(max_examples=300, deadline=None)
@given(
    agent_id=st.integers(0, 10**6),
    seq=st.integers(1, 2**63),
    moved=st.sampled_from(list(ConnectionStatus)),
    code=st.sampled_from(list(StatusCode)),
    at=st.floats(0, 4e9, allow_nan=False),
    last=st.none() | st.floats(0, 4e9, allow_nan=False),
    overload=st.sampled_from([0.0, 3.6]),
    reason=st.none() | st.sampled_from(list(RowReason)),
    name=texts,
    node=st.text(max_size=300),
    host=st.text(max_size=300),
)
def test_status_event_bytes_equal_the_documented_dict(
    agent_id: int,
    seq: int,
    moved: ConnectionStatus,
    code: StatusCode,
    at: float,
    last: float | None,
    overload: float,
    reason: RowReason | None,
    name: str | None,
    node: str,
    host: str,
) -> None:
    row = TransitionRow(agent_id, seq, ConnectionStatus.ACTIVE, moved, code, at, last, reason, overload)
    body = payloads.status_event(row, name, payloads.Origin(node, host))
    expected = reference_status_event(row, name, node, host)
    if len(expected) <= payloads.MAX_EVENT_BYTES:
        assert body == expected
    else:
        assert len(body) <= payloads.MAX_EVENT_BYTES
