"""What a writer remembers of the keep-alives it wrote (`store/written.py`): a repeated keep-alive only
moves `last_keepalive`, grouped by its second; anything that may have undone a write forgets it."""

from __future__ import annotations

from agentpulse.store.batch import Batch, ColumnUpdate
from agentpulse.store.written import WrittenKeepalives
from agentpulse.wire import control

KEEPALIVE = control.parse_keepalive(
    b"Linux |h |6.1 |#1 |x86_64 [Debian GNU/Linux|debian: 12 (bookworm)] - Wazuh v4.14.7\n"
    b'"env":prod\nx merged.mg\n'
)
RELABELLED = control.parse_keepalive(
    b"Linux |h |6.1 |#1 |x86_64 [Debian GNU/Linux|debian: 12 (bookworm)] - Wazuh v4.14.7\n"
    b'"env":test\nx merged.mg\n'
)


def batch(*rows: tuple[int, float, control.Keepalive | None]) -> Batch:
    return Batch(keepalives={agent_id: (at, keepalive) for agent_id, at, keepalive in rows})


def test_a_new_keepalive_writes_its_columns_and_labels_and_a_repeat_only_its_second() -> None:
    written = WrittenKeepalives("manager", "node01")
    first = written.sort(batch((1, 10.4, KEEPALIVE), (2, 10.9, None)))
    assert [row[-2:] for row in first.data_rows] == [(10, 1)]  # last_keepalive, id
    assert first.data_rows[0][3:5] == ("manager", "node01")
    assert first.label_agents == [(1, KEEPALIVE)]
    assert first.touched == {10: [2]}  # no keep-alive body (an event's "alive"): the second only
    again = written.sort(batch((1, 11.2, KEEPALIVE), (2, 11.7, None)))
    assert again.data_rows == [] and again.label_agents == [] and again.touched == {11: [1, 2]}


def test_other_labels_are_written_again_and_the_same_labels_are_not() -> None:
    written = WrittenKeepalives("manager", "node01")
    written.sort(batch((1, 10.0, KEEPALIVE)))
    changed = written.sort(batch((1, 11.0, RELABELLED)))
    assert len(changed.data_rows) == 1 and changed.label_agents == [(1, RELABELLED)]


def test_a_rollback_a_removal_or_a_column_update_makes_the_next_keepalive_write_again() -> None:
    written = WrittenKeepalives("manager", "node01")
    written.sort(batch((1, 10.0, KEEPALIVE), (2, 10.0, KEEPALIVE), (3, 10.0, KEEPALIVE)))
    written.rolled_back(batch((1, 10.0, KEEPALIVE)))
    written.forget(2)
    written.forget_columns(3)
    after = written.sort(batch((1, 11.0, KEEPALIVE), (2, 11.0, KEEPALIVE), (3, 11.0, KEEPALIVE)))
    assert [row[-1] for row in after.data_rows] == [1, 2, 3]
    assert [agent_id for agent_id, _ in after.label_agents] == [1, 2]  # 3's labels are still there
    rolled = Batch(column_updates=[ColumnUpdate(1, {"version": "x"}, None)])
    written.rolled_back(rolled)
    assert [row[-1] for row in written.sort(batch((1, 12.0, KEEPALIVE))).data_rows] == [1]
