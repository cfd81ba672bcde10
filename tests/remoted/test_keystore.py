"""The key store: finding an agent by `!id!` prefix and source IP (any, one host, a network), or by the
source IP alone, and what a reload keeps, drops and reports gone."""

from __future__ import annotations

import logging

import pytest

from agentpulse.remoted.keystore import AcceptedLines, Departures, KeyStore
from agentpulse.wire.errors import Reason, WireError
from agentpulse.wire.keys import KeysFile

KEYS = KeysFile.parse(
    "001 anywhere any k1\n"
    "002 one-host 10.0.0.2 k2\n"
    "003 a-network 10.1.0.0/16 k3\n"
    "004 not-there !10.2.0.0/16 k4\n"
    "005 removed-one any k5\n"
)


@pytest.fixture
def keys() -> KeyStore:
    store = KeyStore()
    store.load(KEYS)
    return store


@pytest.mark.parametrize(
    ("agent_id", "source_ip", "number"),
    [
        ("001", "192.168.7.7", 1),  # any
        ("001", "::1", 1),
        ("002", "10.0.0.2", 2),  # one host, with the prefix too
        ("003", "10.1.200.3", 3),  # inside the network
        ("003", "::ffff:10.1.0.9", 3),  # an IPv4 peer on a dual-stack socket
        ("004", "10.3.0.1", 4),  # outside a negated network
        (None, "10.0.0.2", 2),  # no prefix: only a single-host key is found by address
    ],
)
def test_an_agent_is_found_by_id_and_allowed_source(
    keys: KeyStore, agent_id: str | None, source_ip: str, number: int
) -> None:
    entry = keys.find(agent_id, source_ip)
    assert entry.number == number
    assert keys.find(agent_id, source_ip) is entry  # made on first contact, then kept


@pytest.mark.parametrize(
    ("agent_id", "source_ip", "reason"),
    [
        ("002", "10.0.0.3", Reason.IP_NOT_ALLOWED),  # the wrong host
        ("003", "10.2.0.1", Reason.IP_NOT_ALLOWED),  # outside the network
        ("004", "10.2.5.5", Reason.IP_NOT_ALLOWED),  # inside a negated network
        ("003", "not-an-ip", Reason.IP_NOT_ALLOWED),
        ("009", "10.0.0.2", Reason.UNKNOWN_AGENT),  # no such id
        (None, "10.1.0.1", Reason.UNKNOWN_AGENT),  # a network key is never found by address alone
        (None, "192.168.7.7", Reason.UNKNOWN_AGENT),
    ],
)
def test_a_wrong_source_or_an_unknown_id_is_refused(
    keys: KeyStore, agent_id: str | None, source_ip: str, reason: Reason
) -> None:
    with pytest.raises(WireError) as caught:
        keys.find(agent_id, source_ip)
    assert caught.value.reason is reason
    assert keys.entries == {}  # nothing is made for a refused message


def test_names_and_keys_are_read_without_making_entries(keys: KeyStore) -> None:
    assert keys.name_of(3) == "a-network"
    assert keys.name_of(9) is None
    key = keys.key(2)
    assert key is not None and key.ip.single_host
    assert len(keys) == 5 and 5 in keys and 9 not in keys
    assert keys.entries == {}


def test_a_reload_keeps_unchanged_entries_and_drops_changed_and_removed_ones(keys: KeyStore) -> None:
    unchanged = keys.find("001", "10.9.9.9")
    unchanged.received.note(7)
    changed = keys.find("002", "10.0.0.2")
    keys.find("005", "10.9.9.9")
    reloaded = KeysFile.parse(
        "001 anywhere any k1\n"
        "002 one-host 10.0.0.2 new-key\n"
        "003 a-network 10.1.0.0/16 k3\n"
        "004 not-there !10.2.0.0/16 k4\n"
        "006 newcomer any k6\n"
    )
    change = keys.load(reloaded)
    assert sorted(key.number for key in change.added) == [2, 6]
    assert sorted(key.number for key in change.removed) == [2, 5]
    assert [key.number for key in change.gone] == [5]  # 2 changed, it is still there
    assert sorted(entry.number for entry in change.dropped) == [2, 5]
    assert keys.find("001", "10.9.9.9") is unchanged and unchanged.received.highest == 7
    fresh = keys.find("002", "10.0.0.2")
    assert fresh is not changed and fresh.received.highest == 0
    with pytest.raises(WireError) as caught:
        keys.find("005", "10.9.9.9")
    assert caught.value.reason is Reason.UNKNOWN_AGENT


def test_a_single_host_key_moved_to_another_address_is_found_there_only(keys: KeyStore) -> None:
    keys.load(KeysFile.parse("002 one-host 10.0.0.22 k2\n"))
    assert keys.find(None, "10.0.0.22").number == 2
    with pytest.raises(WireError):
        keys.find(None, "10.0.0.2")


def test_bad_lines_are_skipped_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    store = KeyStore()
    with caplog.at_level(logging.WARNING):
        store.load(KeysFile.parse("001 fine any k1\n002 a2 not-an-ip k2\n"))
    assert len(store) == 1
    assert "client.keys line 2 ignored" in caplog.text


def test_applied_lines_add_change_and_remove_agents_without_a_reload(keys: KeyStore) -> None:
    """Enrolment's new and replaced agents reach the key store at once, as lines of client.keys."""
    entry = keys.find("002", "10.0.0.2")
    change = keys.apply_lines(
        ["006 enrolled any k6", "002 !one-host 10.0.0.2 k2", "007 new-host 10.0.0.7 k7"]
    )
    assert [key.id for key in change.added] == ["006", "007"]
    assert [key.id for key in change.removed] == ["002"] == [key.id for key in change.gone]
    assert change.dropped == [entry]
    assert keys.find("006", "192.168.1.1").number == 6
    assert keys.find(None, "10.0.0.7").number == 7
    for agent_id, source_ip in (("002", "10.0.0.2"), (None, "10.0.0.2")):
        with pytest.raises(WireError):
            keys.find(agent_id, source_ip)


def test_applying_a_line_the_store_already_has_changes_nothing(keys: KeyStore) -> None:
    change = keys.apply_lines(["001 anywhere any k1", "009 !never-there any k9"])
    assert (change.added, change.removed, change.dropped, change.gone) == ([], [], [], [])
    assert keys.load(KEYS).added == []  # the next reload of the same file changes nothing either


def test_a_changed_line_replaces_the_entry(keys: KeyStore) -> None:
    old = keys.find("001", "1.2.3.4")
    change = keys.apply_lines(["001 anywhere any new-key"])
    assert [key.key for key in change.added] == ["new-key"]
    assert change.dropped == [old] and change.gone == []
    assert keys.find("001", "1.2.3.4").key.key == "new-key"


def _accepted(store: KeyStore) -> AcceptedLines:
    """The text the manager sends a worker: its store's lines."""
    return AcceptedLines.index("".join(line + "\n" for line in store.lines.values()))


def test_a_worker_takes_the_managers_lines_as_a_reload_would() -> None:
    """A worker indexes the lines the manager accepted instead of parsing them: the same lines, the same
    address index, and the same entries dropped and agents gone as a reload of the file."""
    manager, reloading, taking = KeyStore(), KeyStore(), KeyStore()
    manager.load(KEYS)
    reloading.load(KEYS)
    assert taking.take_accepted(_accepted(manager)) == Departures([], [])
    assert (taking.lines, taking.by_ip) == (reloading.lines, reloading.by_ip)
    kept = taking.find("001", "10.9.9.9")
    changed = taking.find("002", "10.0.0.2")
    gone = taking.find("005", "10.9.9.9")
    reloaded = KeysFile.parse(
        "001 anywhere any k1\n"
        "002 one-host 10.0.0.22/32 new-key\n"
        "003 a-network 10.1.0.0/16 k3\n"
        "004 not-there !10.2.0.0/16 k4\n"
        "006 newcomer 10.0.0.6 k6\n"
    )
    manager.load(reloaded)
    expected = reloading.load(reloaded)
    departures = taking.take_accepted(_accepted(manager))
    assert (taking.lines, taking.by_ip) == (reloading.lines, reloading.by_ip)
    assert taking.by_ip == {"10.0.0.22": 2, "10.0.0.6": 6}
    assert departures.dropped == [changed, gone]
    assert [key.number for key in departures.gone] == [key.number for key in expected.gone] == [5]
    assert taking.find("001", "10.9.9.9") is kept
    assert taking.find(None, "10.0.0.6").number == 6
