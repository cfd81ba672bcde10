"""Enrolment's rules (reference 14.2 `w_auth_validate_data()`, 14.4): ids, keys, addresses, and when a new
enrolment may replace an agent of the same name or address (`<force>`)."""

from __future__ import annotations

import re

import pytest

from agentpulse.authd.registry import AgentFacts, Enrolled, Policy, Registry, source_address
from agentpulse.config import ForceOptions
from agentpulse.status import ConnectionStatus
from agentpulse.wire import enrolment
from agentpulse.wire.enrolment import EnrolmentError, EnrolRequest
from agentpulse.wire.keys import KeysFile

NOW = 1_800_000_000.0
HOUR = 3600.0
NEVER, ACTIVE, DISCONNECTED = (
    ConnectionStatus.NEVER_CONNECTED,
    ConnectionStatus.ACTIVE,
    ConnectionStatus.DISCONNECTED,
)
FILE = "# by hand\n001 web-01 any k1\n002 db-02 10.0.0.2 k2\n005 !gone-05 any k5\n"


def registry(text: str = FILE, **policy: object) -> Registry:
    registry = Registry(Policy(hostname="manager-host", **policy))  # type: ignore[arg-type]
    registry.load(KeysFile.parse(text))
    return registry


def facts(**by_id: AgentFacts) -> dict[int, AgentFacts]:
    return {int(key.removeprefix("a")): value for key, value in by_id.items()}


OLD_AND_GONE = AgentFacts(DISCONNECTED, NOW - 2 * HOUR, NOW - 30 * 24 * HOUR)


def enrol(
    registry: Registry,
    name: str,
    *,
    ip: str | None = None,
    key_hash: str | None = None,
    groups: tuple[str, ...] = (),
    source: str = "10.9.9.9",
    known: dict[int, AgentFacts] | None = None,
) -> Enrolled:
    request = EnrolRequest(name, "v4.14.7", groups, ip, key_hash)
    return registry.enrol(
        request,
        source,
        NOW,
        facts=(known if known is not None else {}).get,
        group_exists={"default", "linux"}.__contains__,
    )


def refusal(registry: Registry, name: str, **options: object) -> EnrolmentError:
    with pytest.raises(EnrolmentError) as caught:
        enrol(registry, name, **options)  # type: ignore[arg-type]
    return caught.value


# -- ids and keys ------------------------------------------------------------------------------------------


def test_a_new_agent_gets_the_next_id_above_removed_lines_and_a_64_hex_key() -> None:
    keys = registry()
    enrolled = keys.enrol(EnrolRequest("web-02"), "10.9.9.9", NOW, facts={}.get, group_exists=bool)
    assert (enrolled.key.id, enrolled.key.name, enrolled.key.ip.text) == ("006", "web-02", "any")
    assert re.fullmatch(r"[0-9a-f]{64}", enrolled.key.key)
    again = keys.enrol(EnrolRequest("web-03"), "10.9.9.9", NOW, facts={}.get, group_exists=bool)
    assert again.key.id == "007" and again.key.key != enrolled.key.key


def test_the_file_keeps_every_line_and_gains_the_new_one() -> None:
    keys = registry()
    enrolled = keys.enrol(EnrolRequest("web-02"), "10.9.9.9", NOW, facts={}.get, group_exists=bool)
    assert list(keys.lines()) == [*FILE.splitlines(), enrolled.key.line()]
    assert list(enrolled.lines()) == [enrolled.key.line()]


def test_ids_are_formatted_03d_and_go_past_999() -> None:
    keys = registry("999 last any k\n")
    assert keys.enrol(EnrolRequest("next"), "1.1.1.1", NOW, facts={}.get, group_exists=bool).key.id == "1000"


def test_an_id_counter_that_only_grows_even_when_the_highest_line_is_purged() -> None:
    keys = registry()
    keys.load(KeysFile.parse("001 web-01 any k1\n"))  # re-read after someone removed 002 and 005
    assert keys.enrol(EnrolRequest("x1"), "1.1.1.1", NOW, facts={}.get, group_exists=bool).key.id == "006"


# -- addresses ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "use_source_ip", "expected"),
    [
        (None, False, "any"),
        (None, True, "10.9.9.9"),
        ("src", False, "10.9.9.9"),
        ("10.0.0.7", False, "10.0.0.7"),
        ("10.1.0.0/16", True, "10.1.0.0/16"),
    ],
)
def test_the_address_written(ip: str | None, use_source_ip: bool, expected: str) -> None:
    keys = registry(use_source_ip=use_source_ip)
    enrolled = keys.enrol(EnrolRequest("web-02", ip=ip), "10.9.9.9", NOW, facts={}.get, group_exists=bool)
    assert enrolled.key.ip.text == expected


def test_an_ipv4_peer_on_a_dual_stack_socket_is_written_as_ipv4() -> None:
    assert source_address("::ffff:10.9.9.9") == "10.9.9.9"
    assert source_address("2001:db8::1") == "2001:db8::1"


# -- refusals ----------------------------------------------------------------------------------------------


def test_groups_are_checked_first_and_must_exist() -> None:
    error = refusal(registry(), "web-01", groups=("default", "nope"))
    assert error.response == "ERROR: Invalid group: nope"


def test_the_managers_own_name_is_an_invalid_name() -> None:
    assert refusal(registry(), "manager-host").response == "ERROR: Invalid agent name: manager-host"


def test_a_duplicate_name_that_may_not_be_replaced_is_refused_with_the_reason_for_the_log() -> None:
    error = refusal(registry(), "web-01")  # the store knows nothing of it
    assert error.response == "ERROR: Duplicate agent name: web-01"
    assert error.detail == "Failed to get agent-info for agent '001'"


def test_a_duplicate_address_that_may_not_be_replaced_is_refused() -> None:
    error = refusal(registry(), "other", ip="10.0.0.2", known=facts(a2=AgentFacts(ACTIVE, 0, 0)))
    assert error.response == "ERROR: Duplicate IP: 10.0.0.2"
    assert error.detail == "Agent '002' can't be replaced since it is not disconnected."


def test_names_are_case_sensitive_and_removed_names_are_free() -> None:
    keys = registry()
    assert enrol(keys, "WEB-01").key.name == "WEB-01"
    assert enrol(keys, "gone-05").key.id == "007"


# -- the force rules ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "detail"),
    [
        (
            AgentFacts(ACTIVE, 0, NOW - 48 * HOUR),
            "Agent '001' can't be replaced since it is not disconnected.",
        ),
        (
            AgentFacts(DISCONNECTED, NOW - 10 * 60, NOW - 48 * HOUR),
            "Agent '001' has not been disconnected long enough to be replaced.",
        ),
        (
            AgentFacts(NEVER, 0, NOW - 30 * 60),  # enrolled less than an hour ago, never connected
            "Agent '001' doesn't comply with the registration time to be removed.",
        ),
        (
            AgentFacts(DISCONNECTED, NOW - 2 * HOUR, NOW - 59 * 60),
            "Agent '001' doesn't comply with the registration time to be removed.",
        ),
    ],
)
def test_an_agent_is_kept_unless_every_rule_lets_it_go(old: AgentFacts, detail: str) -> None:
    error = refusal(registry(), "web-01", known=facts(a1=old))
    assert (error.response, error.detail) == ("ERROR: Duplicate agent name: web-01", detail)


def test_an_agent_disconnected_for_an_hour_and_registered_an_hour_ago_is_replaced_by_a_new_id() -> None:
    keys = registry(purge=True)
    enrolled = enrol(keys, "web-01", known=facts(a1=OLD_AND_GONE))
    assert enrolled.key.id == "006"
    (replaced,) = enrolled.replaced
    assert (replaced.key.id, replaced.why) == ("001", "Duplicate name")
    assert "001 web-01 any k1" not in list(keys.lines())  # purged
    assert list(enrolled.lines()) == ["001 !web-01 any k1", enrolled.key.line()]
    assert keys.key(1) is None and keys.key(6) is not None


def test_without_purge_the_replaced_line_stays_as_removed() -> None:
    keys = registry(purge=False)
    enrol(keys, "web-01", known=facts(a1=OLD_AND_GONE))
    assert "001 !web-01 any k1" in list(keys.lines())


def test_a_never_connected_agent_is_not_held_by_the_disconnection_rule() -> None:
    old = AgentFacts(NEVER, 0, NOW - 2 * HOUR)
    assert enrol(registry(), "web-01", known=facts(a1=old)).replaced


def test_key_mismatch_keeps_an_agent_whose_key_the_request_still_holds() -> None:
    same = enrolment.key_hash("001", "web-01", "k1")
    error = refusal(registry(), "web-01", key_hash=same, known=facts(a1=OLD_AND_GONE))
    assert error.detail == "Agent '001' key already exists on the manager."
    other = enrolment.key_hash("001", "web-01", "some-other-key")
    assert enrol(registry(), "web-01", key_hash=other, known=facts(a1=OLD_AND_GONE)).replaced


def test_key_mismatch_off_lets_an_unchanged_key_be_replaced() -> None:
    force = ForceOptions(key_mismatch=False)
    same = enrolment.key_hash("001", "web-01", "k1")
    assert enrol(registry(force=force), "web-01", key_hash=same, known=facts(a1=OLD_AND_GONE)).replaced


def test_force_disabled_keeps_every_agent() -> None:
    error = refusal(registry(force=ForceOptions(enabled=False)), "web-01", known=facts(a1=OLD_AND_GONE))
    assert error.detail == "Agent '001' won't be removed because the force option is disabled."


def test_with_both_time_rules_off_even_an_active_agent_just_enrolled_is_replaced() -> None:
    force = ForceOptions(disconnected_time_enabled=False, after_registration_time=0)
    assert enrol(registry(force=force), "web-01", known=facts(a1=AgentFacts(ACTIVE, 0, NOW))).replaced


def test_a_duplicate_address_and_name_of_two_agents_replace_both() -> None:
    keys = registry()
    enrolled = enrol(keys, "web-01", ip="10.0.0.2", known=facts(a1=OLD_AND_GONE, a2=OLD_AND_GONE))
    assert [(r.key.id, r.why) for r in enrolled.replaced] == [
        ("002", "Duplicate IP '10.0.0.2'"),
        ("001", "Duplicate name"),
    ]


def test_a_second_enrolment_of_a_name_in_the_same_batch_is_a_duplicate() -> None:
    keys = registry()
    enrol(keys, "new-01")
    error = refusal(keys, "new-01")  # the store does not know it yet
    assert error.response == "ERROR: Duplicate agent name: new-01"
