"""The status model: `transition()` for every trigger from every status, written out as a table."""

from __future__ import annotations

import itertools

import pytest

from agentpulse.status import LIVE, ConnectionStatus, StatusCode, Transition, Trigger, transition

NEVER = ConnectionStatus.NEVER_CONNECTED
PENDING = ConnectionStatus.PENDING
ACTIVE = ConnectionStatus.ACTIVE
DISCONNECTED = ConnectionStatus.DISCONNECTED

# (trigger, from) -> (to, code), or None when nothing changes
TABLE: dict[tuple[Trigger, ConnectionStatus], tuple[ConnectionStatus, StatusCode] | None] = {
    (Trigger.STARTUP, NEVER): (PENDING, StatusCode.NONE),
    (Trigger.STARTUP, PENDING): (PENDING, StatusCode.NONE),
    (Trigger.STARTUP, ACTIVE): (PENDING, StatusCode.NONE),
    (Trigger.STARTUP, DISCONNECTED): (PENDING, StatusCode.NONE),
    # a UDP agent keeps its keep-alives going across a manager restart, without a new startup
    (Trigger.ALIVE, NEVER): (ACTIVE, StatusCode.NONE),
    (Trigger.ALIVE, PENDING): (ACTIVE, StatusCode.NONE),
    (Trigger.ALIVE, ACTIVE): None,
    (Trigger.ALIVE, DISCONNECTED): (ACTIVE, StatusCode.NONE),
    (Trigger.SHUTDOWN, NEVER): (DISCONNECTED, StatusCode.SHUTDOWN_RECEIVED),
    (Trigger.SHUTDOWN, PENDING): (DISCONNECTED, StatusCode.SHUTDOWN_RECEIVED),
    (Trigger.SHUTDOWN, ACTIVE): (DISCONNECTED, StatusCode.SHUTDOWN_RECEIVED),
    (Trigger.SHUTDOWN, DISCONNECTED): None,
    (Trigger.CONNECTION_LOST, NEVER): None,
    (Trigger.CONNECTION_LOST, PENDING): (DISCONNECTED, StatusCode.CONNECTION_LOST),
    (Trigger.CONNECTION_LOST, ACTIVE): (DISCONNECTED, StatusCode.CONNECTION_LOST),
    (Trigger.CONNECTION_LOST, DISCONNECTED): None,
    (Trigger.TIMEOUT, NEVER): None,
    (Trigger.TIMEOUT, PENDING): (DISCONNECTED, StatusCode.NO_KEEPALIVE),
    (Trigger.TIMEOUT, ACTIVE): (DISCONNECTED, StatusCode.NO_KEEPALIVE),
    (Trigger.TIMEOUT, DISCONNECTED): None,
    (Trigger.MANAGER_RESET, NEVER): None,
    (Trigger.MANAGER_RESET, PENDING): (DISCONNECTED, StatusCode.RESET_BY_MANAGER),
    (Trigger.MANAGER_RESET, ACTIVE): (DISCONNECTED, StatusCode.RESET_BY_MANAGER),
    (Trigger.MANAGER_RESET, DISCONNECTED): None,
}


def test_the_table_covers_every_trigger_but_refusals_from_every_status() -> None:
    others = [trigger for trigger in Trigger if trigger is not Trigger.VERSION_REFUSED]
    assert set(TABLE) == set(itertools.product(others, ConnectionStatus))


@pytest.mark.parametrize(("trigger", "current"), list(TABLE))
def test_transition(trigger: Trigger, current: ConnectionStatus) -> None:
    expected = TABLE[trigger, current]
    assert transition(current, trigger) == (Transition(*expected) if expected is not None else None)


@pytest.mark.parametrize("current", list(ConnectionStatus))
@pytest.mark.parametrize("code", [StatusCode.INVALID_VERSION, StatusCode.VERSION_NOT_RECEIVED])
def test_a_version_refusal_keeps_the_status_and_sets_the_code(
    current: ConnectionStatus, code: StatusCode
) -> None:
    assert transition(current, Trigger.VERSION_REFUSED, code) == Transition(current, code)


@pytest.mark.parametrize("trigger", [t for t in Trigger if t is not Trigger.VERSION_REFUSED])
def test_the_code_argument_only_matters_for_refusals(trigger: Trigger) -> None:
    for current in ConnectionStatus:
        assert transition(current, trigger, StatusCode.INVALID_VERSION) == transition(current, trigger)


def test_live_is_pending_and_active() -> None:
    assert set(LIVE) == {PENDING, ACTIVE}


def test_every_code_has_reason_words_and_every_status_its_agent_control_words() -> None:
    assert all(code.reason for code in StatusCode)
    assert [status.words for status in ConnectionStatus] == [
        "Never connected",
        "Pending",
        "Active",
        "Disconnected",
    ]
