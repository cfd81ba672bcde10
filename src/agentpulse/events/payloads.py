"""Subjects and JSON bodies of the events (docs/events.md is the schema a consumer reads).

Pure: values in, bytes out. The danger is agent-supplied text (a name, a version, an IP string): none of
it ever enters a subject (subjects are built from the numeric agent id alone, `%03d`), and it is cut until
the event fits `MAX_EVENT_BYTES` (see `_fit`), so no agent can make an event larger than 4 KiB.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any

from agentpulse.records import TransitionRow
from agentpulse.status import ConnectionStatus

MAX_EVENT_BYTES = 4096
TEXT_CAPS = (256, 64, 16, 0)  # successive limits for free text until the event fits MAX_EVENT_BYTES
STATUS_TOKEN = "status"
KEEPALIVE_TOKEN = "keepalive"
CONFIG_TOKEN = "config"
MSG_ID_HEADER = "Nats-Msg-Id"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an event comes from: the manager's node and host names (from ossec.conf, capped like the rest)."""

    node: str
    manager_host: str


def agent_token(agent_id: int) -> str:
    """The agent id as subjects, KV keys and msg ids write it: `%03d`, digits only."""
    if agent_id < 0:
        raise ValueError(f"agent id must not be negative: {agent_id}")
    return f"{agent_id:03d}"


def status_subject(prefix: str, agent_id: int) -> str:
    return f"{prefix}.{STATUS_TOKEN}.{agent_token(agent_id)}"


def keepalive_subject(prefix: str, agent_id: int) -> str:
    return f"{prefix}.{KEEPALIVE_TOKEN}.{agent_token(agent_id)}"


def config_subject(prefix: str, agent_id: int) -> str:
    return f"{prefix}.{CONFIG_TOKEN}.{agent_token(agent_id)}"


def config_event(agent_id: int, status: str, at: float, name: str | None, origin: Origin) -> bytes:
    """The body of `<prefix>.config.<id>`: the agent's group_config_status changed (`synced` once it
    reported its group's merged.mg md5, `not synced` when it lacks it)."""

    def build(limit: int) -> dict[str, Any]:
        return {
            "type": CONFIG_TOKEN,
            "agent_id": agent_token(agent_id),
            "name": _cut(name, limit),
            "group_config_status": status,
            "at": iso_utc(at),
            "node": _cut(origin.node, limit),
        }

    return _fit(build)


def status_msg_id(agent_id: int, sequence: int) -> str:
    """`Nats-Msg-Id` of a status event: unique per transition, stable across retries and restarts."""
    return f"{agent_token(agent_id)}:{sequence}"


def parse_status_msg_id(msg_id: str) -> tuple[int, int] | None:
    """(agent id, sequence) from a `Nats-Msg-Id` of ours, `<%03d id>:<sequence>`; None for any other."""
    agent, _, seq = msg_id.partition(":")
    if not (agent.isdigit() and seq.isdigit()):
        return None
    return int(agent), int(seq)


def sequence_of_status_event(body: bytes | None) -> int | None:
    """The `sequence` of a status event's body (a KV entry read back); None for anything else (a deleted
    key's empty marker, a value this version did not write)."""
    try:
        seq = json.loads(body or b"").get("sequence")
    except (ValueError, AttributeError):
        return None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def kv_key(agent_id: int) -> str:
    return agent_token(agent_id)


def iso_utc(at: float) -> str:
    """ISO-8601 UTC with milliseconds and a `Z`: 2025-01-31T12:00:00.250Z."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _cut(text: str | None, limit: int) -> str | None:
    if text is None:
        return None
    return text[:limit]


def _text(text: str | None, limit: int) -> str:
    """A JSON string (or null) exactly as `_dump` writes it, cut to `limit` characters."""
    return "null" if text is None else encode_basestring(text[:limit])


def _dump(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "replace")


def _fit(build: Callable[[int], dict[str, Any]]) -> bytes:
    """Encode `build(limit)` with the largest text limit that keeps the event within MAX_EVENT_BYTES.

    Every agent-supplied string (from client.keys or from the agent's own keep-alive) is first cut to
    `TEXT_CAPS[0]` characters; if the encoded event still exceeds `MAX_EVENT_BYTES` (JSON escapes can make
    one character six bytes), the strings are cut harder until it fits.
    """
    for limit in TEXT_CAPS:
        data = _dump(build(limit))
        if len(data) <= MAX_EVENT_BYTES:
            return data
    raise AssertionError("an event without free text exceeds MAX_EVENT_BYTES")  # pragma: no cover


def status_event(row: TransitionRow, name: str | None, origin: Origin) -> bytes:
    """The body of `<prefix>.status.<id>` and of the KV entry `<id>`.

    A start resets every agent of the last run (code 5), one event each: 50,000 of them cost the start
    3 s through `json.dumps`. So the usual case is written out by hand, as `keepalive_event` is: the
    same bytes as `_fit(build)` gives (tests/events/test_payloads.py holds them equal), at a third of
    the cost; only an event that would exceed MAX_EVENT_BYTES with the first text cap takes the general
    path.
    """
    limit, last = TEXT_CAPS[0], row.last_keepalive
    data = (
        f'{{"type":"{STATUS_TOKEN}","agent_id":"{agent_token(row.agent_id)}","name":{_text(name, limit)},'
        f'"previous":"{row.from_status.value}","status":"{row.to_status.value}",'
        f'"status_code":{int(row.code)},"reason":{encode_basestring(row.reason_text)},"at":{row.at!r},'
        f'"at_iso":"{iso_utc(row.at)}","last_keepalive":{"null" if last is None else repr(last)},'
        f'"sequence":{row.seq},"node":{_text(origin.node, limit)},'
        f'"manager_host":{_text(origin.manager_host, limit)}}}'
    ).encode("utf-8", "replace")
    if len(data) <= MAX_EVENT_BYTES:
        return data

    def build(limit: int) -> dict[str, Any]:
        return {
            "type": STATUS_TOKEN,
            "agent_id": agent_token(row.agent_id),
            "name": _cut(name, limit),
            "previous": row.from_status.value,
            "status": row.to_status.value,
            "status_code": int(row.code),
            "reason": row.reason_text,
            "at": row.at,
            "at_iso": iso_utc(row.at),
            "last_keepalive": row.last_keepalive,
            "sequence": row.seq,
            "node": _cut(origin.node, limit),
            "manager_host": _cut(origin.manager_host, limit),
        }

    return _fit(build)


def outbox_row(prefix: str, row: TransitionRow, name: str | None, origin: Origin) -> tuple[str, str, bytes]:
    """(subject, Nats-Msg-Id, payload): what the store writes to event_outbox with the transition."""
    return (
        status_subject(prefix, row.agent_id),
        status_msg_id(row.agent_id, row.seq),
        status_event(row, name, origin),
    )


@dataclass(frozen=True, slots=True)
class KeepaliveFacts:
    """One keep-alive as the events module keeps it between arrival and publication."""

    agent_id: int
    at: float
    sequence: int
    status: ConnectionStatus  # the status this keep-alive leaves the agent in
    ip: str | None
    version: str | None


def keepalive_event(facts: KeepaliveFacts, name: str | None, run: int, origin: Origin) -> bytes:
    """The body of `<prefix>.keepalive.<id>`.

    `sequence` counts the agent's keep-alives since `run` (the manager start, epoch milliseconds) began,
    from 1: a gap means events were dropped (keep-alive events are at-most-once).

    One is encoded per keep-alive, so the usual case is written out by hand: the same bytes as
    `_fit(build)` gives (tests/events/test_payloads.py holds them equal), at a third of the cost. Only an
    event that would exceed MAX_EVENT_BYTES with the first text cap takes the general path.
    """
    limit = TEXT_CAPS[0]
    data = (
        f'{{"type":"{KEEPALIVE_TOKEN}","agent_id":"{agent_token(facts.agent_id)}",'
        f'"name":{_text(name, limit)},"ip":{_text(facts.ip, limit)},"version":{_text(facts.version, limit)},'
        f'"status":"{facts.status.value}","last_keepalive":{facts.at!r},"sequence":{facts.sequence},'
        f'"run":{run},"node":{_text(origin.node, limit)}}}'
    ).encode("utf-8", "replace")
    if len(data) <= MAX_EVENT_BYTES:
        return data

    def build(limit: int) -> dict[str, Any]:
        return {
            "type": KEEPALIVE_TOKEN,
            "agent_id": agent_token(facts.agent_id),
            "name": _cut(name, limit),
            "ip": _cut(facts.ip, limit),
            "version": _cut(facts.version, limit),
            "status": facts.status.value,
            "last_keepalive": facts.at,
            "sequence": facts.sequence,
            "run": run,
            "node": _cut(origin.node, limit),
        }

    return _fit(build)
