"""The rollout against a real store and real group folders: who gets a push, how many at once, and when an
agent counts as synced. The push sender is the recording function the manager would pass (no remoted)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentpulse.records import StatusUpdate
from agentpulse.rollout.coordinator import FREE_RETRIES, TICK, Rollout
from agentpulse.shared.tree import SharedTree
from agentpulse.status import Trigger
from agentpulse.store.batch import GroupChange, GroupChangeKind, GroupMode
from agentpulse.store.facade import Store
from agentpulse.wire.control import Keepalive
from agentpulse.wire.keys import KeysFile
from tests.store.test_facade import read

DEFAULT_MD5 = "ca35f9148a3273413eccb79f149f4757"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    keys = KeysFile.parse("".join(f"{n:03d} agent-{n:02d} any key{n}\n" for n in range(1, 6)))
    store = Store(tmp_path / "db", manager_host="mgr", node_name="node01", flush_interval=5)
    store.open(list(keys.active()))
    for n in range(1, 6):
        store.submit(StatusUpdate(n, Trigger.STARTUP, 1.0))
    yield store
    store.close()


class Sender:
    def __init__(self, answer: bool = True) -> None:
        self.calls: list[tuple[int, str, str]] = []
        self.answer = answer

    def __call__(self, agent_id: int, md5: str, path: str) -> bool:
        self.calls.append((agent_id, md5, path))
        return self.answer


def rollout(tmp_path: Path, store: Store, sender: Sender, max_pushes: int = 64) -> Rollout:
    tree = SharedTree(tmp_path / "shared", tmp_path / "multigroups")
    made = Rollout(tree, store, sender, shared_reload=3600, max_pushes=max_pushes)
    asyncio.run(made.reload())  # no loop task: the tests drive it
    tree.ensure_default()
    asyncio.run(made.reload())
    made.members = {n: "default" for n in range(1, 6)}
    return made


def keepalive(md5: str | None) -> Keepalive:
    return Keepalive(uname="Linux", version="Wazuh v4.14.7", merged_sum=md5)


def test_an_agent_without_its_groups_sum_gets_a_push_and_is_synced_once_it_reports_it(
    tmp_path: Path, store: Store
) -> None:
    sender = Sender()
    shared = rollout(tmp_path, store, sender)
    shared.on_keepalive(1, 2.0, keepalive(None))
    assert sender.calls == [(1, DEFAULT_MD5, str(tmp_path / "shared/default/merged.mg"))]
    shared.on_keepalive(1, 3.0, keepalive(None))  # one push in flight per agent
    assert len(sender.calls) == 1
    shared.pushed(1, DEFAULT_MD5, True)
    assert store.flush_wait()
    assert read(store, "SELECT group_config_status FROM agent WHERE id = 1")[0][0] == "not synced"
    shared.on_keepalive(1, 4.0, keepalive(DEFAULT_MD5))
    assert store.flush_wait()
    assert read(store, "SELECT group_config_status FROM agent WHERE id = 1")[0][0] == "synced"
    assert shared.group_status("default")["synced"] == 1


def test_no_more_than_max_pushes_are_in_flight_and_the_rest_follow_in_order(
    tmp_path: Path, store: Store
) -> None:
    sender = Sender()
    shared = rollout(tmp_path, store, sender, max_pushes=2)
    for n in range(1, 6):
        shared.on_keepalive(n, 2.0, keepalive("old"))
    assert [call[0] for call in sender.calls] == [1, 2]
    shared.pushed(2, DEFAULT_MD5, True)
    assert [call[0] for call in sender.calls] == [1, 2, 3]
    shared.pushed(1, DEFAULT_MD5, False)
    shared.pushed(3, DEFAULT_MD5, True)
    assert [call[0] for call in sender.calls] == [1, 2, 3, 4, 5]


def test_a_push_no_remoted_could_start_is_asked_again_at_the_next_keepalive(
    tmp_path: Path, store: Store
) -> None:
    sender = Sender(answer=False)
    shared = rollout(tmp_path, store, sender)
    shared.on_keepalive(1, 2.0, keepalive(None))
    assert not shared.in_flight
    shared.on_keepalive(1, 3.0, keepalive(None))
    assert len(sender.calls) == 2


def test_an_agent_that_keeps_lacking_the_same_file_is_pushed_less_often(tmp_path: Path, store: Store) -> None:
    sender = Sender()
    shared = rollout(tmp_path, store, sender)
    for attempt in range(FREE_RETRIES + 3):
        shared.on_keepalive(1, 2.0 + attempt, keepalive("wrong"))
        shared.pushed(1, DEFAULT_MD5, True)
    assert len(sender.calls) == FREE_RETRIES + 1  # then it backs off


def test_push_group_sends_to_every_connected_member_even_a_synced_one(tmp_path: Path, store: Store) -> None:
    sender = Sender()
    shared = rollout(tmp_path, store, sender)
    shared.on_keepalive(1, 2.0, keepalive(DEFAULT_MD5))
    assert sender.calls == []
    assert shared.push_group("default") == 5
    assert sorted(call[0] for call in sender.calls) == [1, 2, 3, 4, 5]


def test_a_changed_group_is_pushed_at_once_to_connected_members_that_lack_it(
    tmp_path: Path, store: Store
) -> None:
    sender = Sender()
    shared = rollout(tmp_path, store, sender)
    for n in range(1, 6):
        shared.on_keepalive(n, 2.0, keepalive(DEFAULT_MD5))
    (tmp_path / "shared/default/agent.conf").write_text("<agent_config/>\n")
    sums = asyncio.run(shared.reload())
    assert sums["default"] != DEFAULT_MD5
    assert sorted(call[0] for call in sender.calls) == [1, 2, 3, 4, 5]
    assert {call[1] for call in sender.calls} == {sums["default"]}
    assert shared.group_status("default")["synced"] == 0


def _write_behind_the_stores_back(store: Store, agent_id: int, csv: str) -> None:
    with sqlite3.connect(store.global_db) as db:
        db.execute("UPDATE agent SET `group` = ? WHERE id = ?", (csv, agent_id))


async def _until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Bounded: a refresh waits REFRESH_DELAY and the store's commit, which under the whole suite on two
    cores once took over the 5 s this waited before."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not within the timeout"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("shared_database", [False, True])
def test_the_agents_groups_are_read_every_scan_only_where_other_nodes_write_the_database(
    tmp_path: Path, store: Store, shared_database: bool
) -> None:
    """A single node's memberships all go through its store, which says when they change; a 200,000-row
    read every `shared_reload` is for the writes of other nodes only."""

    async def scenario() -> tuple[str | None, str | None, bool]:
        tree = SharedTree(tmp_path / "shared", tmp_path / "multigroups")
        shared = Rollout(tree, store, Sender(), shared_reload=0.01, shared_database=shared_database)
        await shared.start()
        try:
            assert store.flush_wait()
            _write_behind_the_stores_back(store, 2, "other-node")
            await asyncio.sleep(TICK * 1.5)  # one scan
            by_scan = shared.members.get(2)
            store.change_groups([GroupChange(GroupChangeKind.CREATE, ("web",))])
            store.change_groups([GroupChange(GroupChangeKind.SET, ("web",), 3, GroupMode.OVERRIDE)])
            await _until(lambda: shared.members.get(3) == "web")
            store.remove_agents([4], 5.0)
            await _until(lambda: 4 not in shared.members)
            return by_scan, shared.members.get(3), 4 in shared.members
        finally:
            await shared.stop()

    by_scan, through_store, removed_kept = asyncio.run(scenario())
    assert by_scan == ("other-node" if shared_database else "default")
    assert through_store == "web"
    assert not removed_kept


def test_a_change_that_comes_while_the_memberships_are_read_is_read_too(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Agent 4 is removed just after a refresh read the table, while that refresh still runs: the change
    must cause one more read. (It was dropped: `groups_changed` saw a refresh under way and did nothing.)"""

    async def scenario() -> tuple[int, bool]:
        tree = SharedTree(tmp_path / "shared", tmp_path / "multigroups")
        shared = Rollout(tree, store, Sender(), shared_reload=60.0)
        await shared.start()
        reads = 0
        original = shared._load_members

        async def load_then_remove() -> None:
            nonlocal reads
            reads += 1
            await original()
            if reads == 1:  # the first refresh's read is done and its task still runs
                store.remove_agents([4], 5.0)  # tells groups_changed, on the loop

        monkeypatch.setattr(shared, "_load_members", load_then_remove)
        try:
            assert store.flush_wait()
            shared.groups_changed()
            await _until(lambda: 4 not in shared.members)
            return reads, 4 in shared.members
        finally:
            await shared.stop()

    reads, kept = asyncio.run(scenario())
    assert not kept and reads == 2
