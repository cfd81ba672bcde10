"""The pending batch: what a removal forgets, and how a failed batch goes back under what came since."""

from __future__ import annotations

from agentpulse.records import TransitionRow
from agentpulse.status import ConnectionStatus, StatusCode
from agentpulse.store.batch import Batch, InsertedAgent
from agentpulse.wire.keys import KeysFile

KEYS = list(KeysFile.parse("001 a-01 any k1\n002 a-02 any k2\n").active())


def _row(agent_id: int, seq: int) -> TransitionRow:
    return TransitionRow(
        agent_id, seq, ConnectionStatus.PENDING, ConnectionStatus.ACTIVE, StatusCode.NONE, 1.0, None
    )


def test_an_empty_batch_is_false_and_any_pending_write_makes_it_true() -> None:
    assert not Batch()
    assert Batch(outbox_acked=[1])
    assert Batch(deleted={1: False})


def test_forget_drops_what_was_pending_for_the_agent_and_keeps_its_deletion() -> None:
    batch = Batch(new_agents=list(KEYS), agent_dbs={1, 2}, history=[_row(1, 1)])
    batch.keepalives[1] = (1.0, None)
    batch.runtime_states[1] = ("{}", 1.0)
    batch.event_counts[1] = 3
    batch.inserted[1] = InsertedAgent(1, "a-01", None, None, None, (), 1)
    batch.forget(1, purge_files=True)
    assert (batch.keepalives, batch.runtime_states, batch.event_counts, batch.inserted) == ({}, {}, {}, {})
    assert batch.agent_dbs == {2}
    assert [key.number for key in batch.new_agents] == [2]
    assert batch.deleted == {1: True}
    assert batch.history == [_row(1, 1)]  # the removal's own history row is what follows it


def test_a_purge_once_asked_is_not_undone_by_a_later_plain_removal() -> None:
    batch = Batch()
    batch.forget(1, purge_files=True)
    batch.forget(1, purge_files=False)
    assert batch.deleted == {1: True}


def test_a_failed_batch_goes_under_the_newer_one_newer_values_win_order_is_kept() -> None:
    failed = Batch(history=[_row(1, 1)], outbox_acked=[5])
    failed.keepalives[1] = (1.0, None)
    failed.event_counts[1] = 2
    newer = Batch(history=[_row(1, 2)], outbox_acked=[6])
    newer.keepalives[1] = (2.0, None)
    newer.event_counts[1] = 3
    merged = failed.requeue_under(newer)
    assert merged.keepalives[1] == (2.0, None)
    assert merged.event_counts[1] == 5
    assert [row.seq for row in merged.history] == [1, 2]
    assert merged.outbox_acked == [5, 6]


def test_an_agent_removed_since_the_failure_loses_what_the_failed_batch_held_for_it() -> None:
    failed = Batch()
    failed.keepalives[1] = (1.0, None)
    failed.agent_dbs.add(1)
    newer = Batch(deleted={1: True})
    merged = failed.requeue_under(newer)
    assert 1 not in merged.keepalives and 1 not in merged.agent_dbs
    assert merged.deleted == {1: True}
