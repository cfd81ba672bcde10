"""The writer thread on a backend that records what it is asked: retries, waiters, jobs, the stop."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from agentpulse.records import TransitionRow
from agentpulse.status import ConnectionStatus, StatusCode
from agentpulse.store.backend import Fragmentation, WriteFailed
from agentpulse.store.batch import Batch
from agentpulse.store.view import LoadedAgent
from agentpulse.store.writer import BatchWriter, StoreClosed
from agentpulse.wire.keys import AgentKey


class RecordingBackend:
    """The writer's side of the Backend protocol, in memory; `fail` makes the next writes fail."""

    def __init__(self) -> None:
        self.written: list[Batch] = []
        self.fail = 0
        self.closed = False
        self.agent_dbs: list[int] = []
        self.threads: set[str] = set()

    def open(self, now: float) -> None: ...

    def close(self) -> None:
        self.closed = True

    def insert_missing(self, agents: list[AgentKey], now: float) -> list[int]:
        return []

    def load(self) -> tuple[list[LoadedAgent], dict[int, int]]:
        return [], {}

    def write(self, batch: Batch, now: float) -> None:
        self.threads.add(threading.current_thread().name)
        if self.fail:
            self.fail -= 1
            raise WriteFailed("disk full")
        self.written.append(batch)

    def prepare_agent_dbs(self) -> None: ...

    def wants_idle_flush(self) -> bool:
        return False

    def take_adopted(self) -> list[object]:
        return []

    def create_agent_db(self, agent_id: int) -> None:
        self.agent_dbs.append(agent_id)

    def remove_agent_files(self, agent_id: int) -> None: ...

    def vacuum(self, now: float) -> int:
        return len(self.written)

    def vacuum_agent_db(self, agent_id: int) -> int:
        return 0

    def fragmentation(self, agent_id: int | None = None) -> Fragmentation:
        return Fragmentation(0, 0)

    def agent_db_path(self, agent_id: int) -> Path:
        return Path(f"{agent_id:03d}.db")

    def reader(self, *, keep_open: bool = False):  # type: ignore[no-untyped-def]
        raise NotImplementedError


@pytest.fixture
def backend() -> RecordingBackend:
    return RecordingBackend()


def _writer(backend: RecordingBackend, committed: list[Batch] | None = None) -> BatchWriter:
    sink = committed if committed is not None else []
    writer = BatchWriter(
        backend,
        flush_interval=0.01,
        clock=lambda: 1.0,
        known=lambda agent_id: agent_id != 9,
        committed=sink.append,
    )
    writer.start(lambda: None)
    return writer


def test_a_failed_write_is_retried_with_what_arrived_since_and_nothing_is_lost(
    backend: RecordingBackend,
) -> None:
    backend.fail = 2
    writer = _writer(backend)
    try:
        with writer.lock:
            writer.batch.outbox_acked.append(1)
        assert writer.flush_wait(10)
        with writer.lock:
            writer.batch.outbox_acked.append(2)
        assert writer.flush_wait(10)
        assert [ack for batch in backend.written for ack in batch.outbox_acked] == [1, 2]
        assert writer.write_errors == 2
    finally:
        writer.close()


def test_commits_are_told_and_jobs_run_on_the_writer_thread_after_the_pending_batch(
    backend: RecordingBackend,
) -> None:
    committed: list[Batch] = []
    writer = _writer(backend, committed)
    try:
        with writer.lock:
            writer.batch.outbox_acked.append(7)
        assert writer.run_job(lambda b: b.vacuum(0.0)).result(10) == 1  # the pending batch was written first
        assert [batch.outbox_acked for batch in committed] == [[7]]
        assert backend.threads == {"store-writer"}
    finally:
        writer.close()


def test_agent_databases_are_made_for_known_agents_only_and_waiters_wait_for_them(
    backend: RecordingBackend,
) -> None:
    writer = _writer(backend)
    try:
        with writer.lock:
            writer.batch.agent_dbs.update({1, 9})
        assert writer.flush_wait(10)
        assert backend.agent_dbs == [1]  # 9 was removed since its first startup
    finally:
        writer.close()


def test_close_writes_what_was_accepted_then_refuses_jobs_and_waiters(backend: RecordingBackend) -> None:
    writer = _writer(backend)
    with writer.lock:
        writer.batch.outbox_acked.append(3)
    writer.close()
    assert [batch.outbox_acked for batch in backend.written] == [[3]]
    assert backend.closed
    with pytest.raises(StoreClosed):
        writer.run_job(lambda b: None).result(1)
    assert not writer.when_committed(lambda: None)


def _row(agent_id: int, seq: int) -> TransitionRow:
    return TransitionRow(
        agent_id, seq, ConnectionStatus.PENDING, ConnectionStatus.ACTIVE, StatusCode.NONE, 1.0, None
    )


def test_an_outage_holds_at_most_max_pending_rows_keeps_every_status_and_logs_once_each_way(
    backend: RecordingBackend, caplog: pytest.LogCaptureFixture
) -> None:
    backend.fail = 1_000_000  # until the test lets writes through
    writer = BatchWriter(
        backend,
        flush_interval=0.01,
        clock=lambda: 1.0,
        known=lambda _: True,
        committed=[].append,
        max_pending=1000,
    )
    caplog.set_level(logging.DEBUG, "agentpulse.store.writer")
    writer.start(lambda: None)
    try:
        for seq in range(1, 1501):  # 1,500 changes of agent 1, each with its outbox row: 3,000 rows
            with writer.lock:
                writer.batch.history.append(_row(1, seq))
                writer.batch.outbox.append(("s", f"001:{seq}", b"{}"))
                writer.batch.statuses[1] = (ConnectionStatus.ACTIVE, StatusCode.NONE, float(seq), None)
            writer.wake()
        deadline = time.monotonic() + 10
        while writer.dropped < 2000 and time.monotonic() < deadline:
            writer.wake()
            time.sleep(0.01)
        backend.fail = 0
        assert writer.flush_wait(10)
    finally:
        writer.close()
    written = [row.seq for batch in backend.written for row in batch.history]
    assert written == list(range(1001, 1501))  # the newest 500 history rows (and 500 outbox rows) kept
    outbox = [msg for batch in backend.written for _, msg, _ in batch.outbox]
    assert (outbox[0], len(outbox)) == ("001:1001", 500)
    assert backend.written[0].statuses[1][2] == 1500.0  # the latest status, always kept
    assert writer.dropped == 2000
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if "holding status changes in memory" in w]) == 1
    assert len([w for w in warnings if "work again" in w]) == 1
