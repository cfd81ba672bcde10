"""Wazuh's q syntax and parameters into AgentQuery: precedence, timeframes, and the refusals."""

from __future__ import annotations

import pytest

from agentpulse.api.errors import ApiError
from agentpulse.api.http import Request
from agentpulse.api.query import agents_request, normalised_version, parse_q, timeframe
from agentpulse.store.agentquery import AgentField, AllOf, AnyOf, Condition, Op

NOW = 1_000_000.0


def request(query: str) -> Request:
    pairs = [tuple(part.split("=", 1)) for part in query.split("&") if part]
    return Request("GET", "/agents", [(k, v) for k, v in pairs], {}, b"", "127.0.0.1")


def test_and_binds_tighter_than_or_and_parentheses_group() -> None:
    assert parse_q("id=1,id=2;status=active", NOW) == AnyOf(
        (
            Condition(AgentField.ID, Op.EQ, 1),
            AllOf((Condition(AgentField.ID, Op.EQ, 2), Condition(AgentField.STATUS, Op.EQ, "active"))),
        )
    )
    grouped = parse_q("(id=1,id=2);status=active", NOW)
    assert isinstance(grouped, AllOf) and isinstance(grouped.parts[0], AnyOf)


def test_keepalive_timeframes_are_ages() -> None:
    assert parse_q("lastKeepAlive<1d", NOW) == Condition(AgentField.LAST_KEEPALIVE, Op.GT, NOW - 86400)
    assert parse_q("lastKeepAlive>30m", NOW) == Condition(AgentField.LAST_KEEPALIVE, Op.LT, NOW - 1800)
    assert timeframe("2w") == 1209600 and timeframe("7x") is None


@pytest.mark.parametrize(
    ("q", "code"),
    [
        ("id=1;", 1407),
        ("nope=1", 1408),
        ("lastKeepAlive=1d", 1409),
        ("dateAdd<2024-13-40", 1412),
        ("id=abc", 1407),
        ("(id=1", 1407),
        ("id=1)", 1407),
    ],
)
def test_refused_queries(q: str, code: int) -> None:
    with pytest.raises(ApiError) as caught:
        parse_q(q, NOW)
    assert caught.value.status == 400 and caught.value.code == code


def test_parameters() -> None:
    parsed = agents_request(
        request("limit=10&offset=5&sort=-lastKeepAlive,+name&select=name,os.platform&agents_list=1,002"), NOW
    )
    assert parsed.query.limit == 10 and parsed.query.offset == 5 and parsed.ids == [1, 2]
    assert [(k.field, k.descending) for k in parsed.query.sort] == [
        (AgentField.LAST_KEEPALIVE, True),
        (AgentField.NAME, False),
    ]
    assert parsed.select == frozenset({"name", "os.platform"})
    for bad in (
        "limit=0",
        "limit=-1",
        "limit=100001",
        "offset=-1",
        "select=key",
        "sort=key",
        "status=up",
        "agents_list=1;2",
    ):
        with pytest.raises(ApiError):
            agents_request(request(bad), NOW)
    assert (
        normalised_version("4.4.0")
        == normalised_version("v4.4.0")
        == normalised_version("Wazuh 4.4.0")
        == "Wazuh v4.4.0"
    )
