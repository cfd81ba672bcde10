"""The store: what every other component calls to change or read agent statuses. Backend-neutral.

`Store.submit()` runs on the event loop and costs a dict update; the writer thread (`store/writer.py`)
commits the pending batch through the backend (`store/sqlite/` by default, or `store/postgresql/`). Every write rides in that one
batch, so it keeps its order against the status changes around it. An enrolled agent starts with a
registration row, `never_connected -> never_connected` code 0 (see `register_agents`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future
from pathlib import Path

from agentpulse.records import MANAGER_ID, StatusUpdate, TransitionRow
from agentpulse.status import LIVE, ConnectionStatus, RowReason, StatusCode, Trigger
from agentpulse.store.backend import Backend, Fragmentation
from agentpulse.store.batch import Batch, ColumnUpdate, GroupChange, InsertedAgent, OutboxRow
from agentpulse.store.reader import Reader
from agentpulse.store.sqlite.backend import SqliteBackend
from agentpulse.store.subscriber import (
    ConfigListener,
    KeepaliveListener,
    OutboxEncoder,
    Subscriber,
    TransitionListener,
)
from agentpulse.store.view import Adopted, AgentView, StatusView
from agentpulse.store.writer import DEFAULT_MAX_PENDING, BatchWriter, FlushObserver, StoreClosed
from agentpulse.wire.control import Keepalive
from agentpulse.wire.keys import AgentKey

# A node's own "connection lost" and "silent": the losses another node's binding can supersede.
LOSS_CODES = (StatusCode.CONNECTION_LOST, StatusCode.NO_KEEPALIVE)


class Store:
    """Agent statuses in memory (the view) and on their way to the database (the pending batch).

    `submit()` applies the status model to the view (`store/view.py`) and adds what must be written to the
    pending batch, which the writer thread (`store/writer.py`) commits through the backend. Writes from
    the query socket and the CLI's peers (agents inserted or removed, groups, cluster columns) ride in the
    same batch, so every write keeps its order against the status changes around it. Subscribers
    (`store/subscriber.py`) are told outside the lock.
    """

    def __init__(
        self,
        db_dir: Path,
        *,
        manager_host: str,
        node_name: str,
        flush_interval: float = 1.0,
        max_pending: int = DEFAULT_MAX_PENDING,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        backend: Backend | None = None,
    ) -> None:
        self.db_dir = db_dir
        self.global_db = db_dir / "global.db"
        self.manager_host = manager_host
        self.node_name = node_name
        self.clock = clock
        self.monotonic = monotonic
        self.backend: Backend = backend or SqliteBackend(
            db_dir, manager_host=manager_host, node_name=node_name
        )
        self.view = StatusView()
        self._writer = BatchWriter(
            self.backend,
            flush_interval=flush_interval,
            max_pending=max_pending,
            clock=clock,
            known=self.view.__contains__,
            committed=self._committed,
        )
        self._subscribers: list[Subscriber] = []
        self.loaded: frozenset[int] = frozenset()  # the agents the database had at open
        self._transition_listeners: tuple[TransitionListener, ...] = ()
        self._keepalive_listeners: tuple[KeepaliveListener, ...] = ()
        self._outbox_encoder: OutboxEncoder | None = None
        self._config_listeners: tuple[ConfigListener, ...] = ()
        self._groups_listeners: tuple[Callable[[], None], ...] = ()
        # Several nodes: the number of the batch that binds each agent to this node last (a live status or
        # a claim), so a read of the other nodes' bindings can tell whether it saw this node's (`settled`).
        self._bound_in: dict[int, int] = {}

    # -- start and stop (called from a thread, never from the event loop) -------------------------------

    def open(self, agents: Iterable[AgentKey]) -> None:
        """Create or open the database, register the agents of client.keys, load the view, start writing."""
        agent_list = list(agents)

        def opening() -> None:
            self.backend.open(self.clock())
            self.backend.insert_missing(agent_list, self.clock())
            self.view.load(*self.backend.load())
            self.loaded = frozenset(self.view.agents)

        self._writer.start(opening)

    def close(self) -> None:
        """Write everything accepted so far, then stop the writer thread."""
        self._writer.close()

    # -- subscribers -------------------------------------------------------------------------------------

    def subscribe(self, subscriber: Subscriber) -> None:
        if subscriber.outbox_encoder is not None and self._outbox_encoder is not None:
            raise ValueError("the store already has an outbox encoder")
        self._subscribers.append(subscriber)
        self._resubscribe()

    def unsubscribe(self, subscriber: Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)
            self._resubscribe()

    def _resubscribe(self) -> None:
        subs = self._subscribers
        self._transition_listeners = tuple(s.on_transition for s in subs if s.on_transition is not None)
        self._keepalive_listeners = tuple(s.on_keepalive for s in subs if s.on_keepalive is not None)
        self._outbox_encoder = next((s.outbox_encoder for s in subs if s.outbox_encoder is not None), None)
        self._config_listeners = tuple(s.on_config_status for s in subs if s.on_config_status is not None)
        self._groups_listeners = tuple(s.on_groups_changed for s in subs if s.on_groups_changed is not None)
        self.backend.set_outbox_encoder(self._outbox_encoder)

    def _committed(self, batch: Batch) -> None:
        if batch.outbox:
            for subscriber in list(self._subscribers):
                if subscriber.on_outbox_committed is not None:
                    subscriber.on_outbox_committed(len(batch.outbox))

    # -- what the store knows (loop thread) ---------------------------------------------------------------

    @property
    def agents(self) -> Mapping[int, AgentView]:
        return self.view.agents

    def status_of(self, agent_id: int) -> ConnectionStatus | None:
        view = self.view.agents.get(agent_id)
        return None if view is None else view.status

    def name_of(self, agent_id: int) -> str | None:
        """The name global.db has for this agent (or had, for one removed in this run)."""
        return self.view.name_of(agent_id)

    def live_agents(self) -> Iterator[tuple[int, AgentView]]:
        return self.view.live()

    # -- status records (loop thread: cheap, in memory) ----------------------------------------------------

    def restore_acks(self, acks: Iterable[StatusUpdate]) -> int:
        """Manager start, before `reset_connections`: acknowledgements of the last run (startups, a first
        keep-alive) that the database does not show, because the manager died before its commit, are
        applied now, oldest first, as they would have been; the reset then marks those agents (code 5).

        An ack is shown when the agent is live in the database (the reset marks it anyway) or its
        last_keepalive (whole seconds) is not older than the ack. Returns how many agents were restored.
        """
        restored: set[int] = set()
        for update in sorted(acks, key=lambda ack: ack.at):
            view = self.view.agents.get(update.agent_id)
            if view is None or view.status in LIVE:
                continue
            if view.last_keepalive is not None and view.last_keepalive >= math.floor(update.at):
                continue
            if self.submit(update) is not None:
                restored.add(update.agent_id)
        return len(restored)

    def reset_connections(self) -> int:
        """Manager start: every pending or active agent becomes disconnected with code 5 (but those another
        node of the cluster holds: theirs to keep, or the survivors' to close when that node dies)."""
        now = self.clock()
        live = [(agent_id, view) for agent_id, view in self.view.live() if not view.elsewhere]
        # What `submit` does for each, with one lock for all: 50,000 of them are the whole start's work.
        rows = [
            self.view.apply(view, StatusUpdate(agent_id, Trigger.MANAGER_RESET, now))
            for agent_id, view in live
        ]
        changed = [row for row in rows if row is not None]
        outbox = [self._outbox_row(row) for row in changed]
        with self._writer.lock:
            batch = self._writer.batch
            for row, event in zip(changed, outbox, strict=True):
                batch.statuses[row.agent_id] = (row.to_status, row.code, now, None)
                batch.add_event(row, event)
        for row in changed:
            for listener in self._transition_listeners:
                listener(row)
        return len(live)

    def submit(self, update: StatusUpdate) -> TransitionRow | None:
        """Apply one record. Returns the transition it caused, if any. Unknown agents are ignored."""
        view = self.view.agents.get(update.agent_id)
        if view is None:
            return None
        trigger, keepalive = update.trigger, update.keepalive
        if trigger is Trigger.CONNECTION_LOST and view.elsewhere:
            # Another node holds it and this node has not heard from it since: no connection of it here
            # to lose (a key removed here closes only this node's connections; its removal row follows).
            return None
        if keepalive is not None:
            for keepalive_listener in self._keepalive_listeners:
                keepalive_listener(update.agent_id, update.at, keepalive)
        starting = trigger is Trigger.STARTUP
        claimed = False
        if starting or trigger is Trigger.ALIVE:
            claimed = self.view.heard_from(update.agent_id, view, self.monotonic())
            if starting or keepalive is not None:
                view.last_keepalive = update.at
        writes_keepalive = starting or (trigger is Trigger.ALIVE and keepalive is not None)
        new_db = starting and not view.has_agent_db
        view.has_agent_db = view.has_agent_db or starting
        row = self.view.apply(view, update)
        outbox = self._outbox_row(row)
        if writes_keepalive or new_db or row is not None or claimed:
            with self._writer.lock:
                batch = self._writer.batch
                if claimed or (row is not None and row.to_status in LIVE):
                    self._bound_in[update.agent_id] = self._writer.filling
                if claimed:
                    batch.claims.setdefault(update.agent_id, False)
                if writes_keepalive:
                    batch.keepalives[update.agent_id] = (update.at, keepalive)
                if new_db:
                    batch.agent_dbs.add(update.agent_id)
                if row is not None:
                    batch.statuses[update.agent_id] = (row.to_status, row.code, update.at, update.version)
                    batch.add_event(row, outbox)
        if row is not None:
            for listener in self._transition_listeners:
                listener(row)
        return row

    def _outbox_row(self, row: TransitionRow | None) -> OutboxRow | None:
        encoder = self._outbox_encoder
        return None if row is None or encoder is None else encoder(row)

    def submit_repeats(
        self, agent_ids: list[int], ats: list[float], keepalives: dict[int, Keepalive]
    ) -> None:
        """Keep-alives that repeat each agent's last one (`keepalives`), in arrival order: what `submit`
        does for each, with one lock and no record objects for the common case, an agent already active.
        """
        agents, view_of = self.view.agents, self.view
        monotonic = self.monotonic()
        accepted: list[tuple[int, float, Keepalive]] = []
        claimed: list[int] = []
        others: list[StatusUpdate] = []
        for agent_id, at in zip(agent_ids, ats, strict=True):
            view = agents.get(agent_id)
            keepalive = keepalives.get(agent_id)
            if view is None or keepalive is None:
                continue
            if view.status is not ConnectionStatus.ACTIVE or others:
                # a transition (or anything after one, to keep the order): the general path
                others.append(StatusUpdate(agent_id, Trigger.ALIVE, at, keepalive=keepalive))
                continue
            if view_of.heard_from(agent_id, view, monotonic):
                claimed.append(agent_id)
            view.last_keepalive = at
            accepted.append((agent_id, at, keepalive))
        with self._writer.lock:
            pending = self._writer.batch.keepalives
            for agent_id, at, keepalive in accepted:
                pending[agent_id] = (at, keepalive)
            for agent_id in claimed:
                self._writer.batch.claims.setdefault(agent_id, False)
                self._bound_in[agent_id] = self._writer.filling
        for listener in self._keepalive_listeners:
            for agent_id, at, keepalive in accepted:
                listener(agent_id, at, keepalive)
        for update in others:
            self.submit(update)

    def record_state(self, agent_id: int, state_json: str) -> None:
        """An agent's answer to `getstate`, shown by agent_control -i."""
        if agent_id in self.view:
            with self._writer.lock:
                self._writer.batch.runtime_states[agent_id] = (state_json, self.clock())

    def count_events(self, counts: dict[int, int]) -> None:
        with self._writer.lock:
            batch = self._writer.batch.event_counts
            for agent_id, count in counts.items():
                batch[agent_id] = batch.get(agent_id, 0) + count

    def mark_alerted(self, agent_id: int, seq: int) -> None:
        """The disconnection alert for this transition was raised."""
        with self._writer.lock:
            self._writer.batch.alerted.append((agent_id, seq))

    def ack_outbox(self, row_ids: Iterable[int]) -> None:
        """Events acknowledged by NATS: the writer deletes their outbox rows (any thread may call this)."""
        with self._writer.lock:
            self._writer.batch.outbox_acked.extend(row_ids)

    # -- agents, groups and columns (loop thread; the query socket, key reloads) --------------------------

    def add_agents(self, agents: Iterable[AgentKey]) -> list[int]:
        """Accept agents that client.keys gained while running; the writer inserts them."""
        new = [a for a in agents if a.number not in self.view and a.number != MANAGER_ID]
        now = self.clock()
        for agent in new:
            self.view.add(agent.number, agent.name, agent.ip.text, now)
        if new:
            with self._writer.lock:
                self._writer.batch.new_agents.extend(new)
            self._writer.wake()
            self._groups_changed()
        return [agent.number for agent in new]

    def touch(self, agent_id: int, at: float) -> None:
        """`update-keepalive`: last_keepalive = at, without the data of a keep-alive body."""
        view = self.view.agents.get(agent_id)
        if view is None:
            return
        view.last_keepalive = at
        claimed = self.view.heard_from(agent_id, view, self.monotonic())
        with self._writer.lock:
            if claimed:
                self._writer.batch.claims.setdefault(agent_id, False)
                self._bound_in[agent_id] = self._writer.filling
            pending = self._writer.batch.keepalives
            current = pending.get(agent_id)
            if current is None or current[1] is None:
                pending[agent_id] = (at, None)

    def set_sync_status(self, agent_id: int, sync_status: str) -> None:
        """The cluster bookkeeping value a command asked for (never a downgrade, see the backend)."""
        if agent_id in self.view:
            with self._writer.lock:
                self._writer.batch.sync_statuses[agent_id] = sync_status

    def insert_agent(self, agent: InsertedAgent) -> bool:
        """`insert-agent`: False when the id is taken (the manager's included)."""
        if agent.id in self.view or agent.id == MANAGER_ID:
            return False
        self.view.add(agent.id, agent.name, agent.register_ip or "", agent.date_add)
        with self._writer.lock:
            self._writer.batch.inserted[agent.id] = agent
        self._writer.wake()
        self._groups_changed()
        return True

    def register_agents(self, agents: Iterable[InsertedAgent], at: float) -> list[TransitionRow]:
        """Enrolled agents: each a never-connected row (with its groups), and the first row of its history,
        `never_connected -> never_connected` code 0 with the reason `registered`, and its status event."""
        rows: list[TransitionRow] = []
        for agent in agents:
            if agent.id in self.view or agent.id == MANAGER_ID:
                continue
            view = self.view.add(agent.id, agent.name, agent.register_ip or "", agent.date_add)
            row = self.view.registered(agent.id, view, at)
            outbox = self._outbox_row(row)
            with self._writer.lock:
                batch = self._writer.batch
                batch.inserted[agent.id] = agent
                batch.add_event(row, outbox)
            rows.append(row)
            for listener in self._transition_listeners:
                listener(row)
        if rows:
            self._writer.wake()
            self._groups_changed()
        return rows

    def remove_agents(
        self,
        agent_ids: Iterable[int],
        at: float,
        *,
        purge_files: bool = False,
        reason: RowReason | None = None,
    ) -> list[TransitionRow]:
        """Delete agents (labels and groups go with them), each with its removal row and status event,
        which carries `reason` if given (an enrolment replaced the agent). With purge_files, its
        per-agent database goes too.

        Removal (delete-agent, or an agent purged from client.keys) is recorded as one last history row and
        status event to `disconnected`: an agent not yet disconnected goes `-> disconnected` with code 0, one
        already disconnected repeats its status and code. The status model never produces either, so
        consumers can tell a removal from a disconnection; the agent's row is then gone, its history stays.
        """
        rows: list[TransitionRow] = []
        for agent_id in agent_ids:
            row = self.view.remove(agent_id, at, reason)
            if row is None:
                continue
            outbox = self._outbox_row(row)
            with self._writer.lock:
                batch = self._writer.batch
                batch.forget(agent_id, purge_files=purge_files)
                batch.add_event(row, outbox)
            rows.append(row)
            for listener in self._transition_listeners:
                listener(row)
        if rows:
            self._writer.wake()
            self._groups_changed()  # their memberships went with them
        return rows

    def forget_removed(self, agent_ids: Iterable[int], at: float) -> list[int]:
        """Agents another node removed (their rows are gone from the shared database, with their removal
        row and event): out of this node's view, with nothing written. The agents forgotten."""
        forgotten = [agent_id for agent_id in agent_ids if self.view.remove(agent_id, at) is not None]
        if forgotten:
            self._groups_changed()
        return forgotten

    def change_groups(self, changes: Iterable[GroupChange]) -> None:
        with self._writer.lock:
            self._writer.batch.group_changes.extend(changes)
        self._writer.wake()
        self._groups_changed()

    def _groups_changed(self) -> None:
        for listener in self._groups_listeners:
            listener()

    def set_config_statuses(self, statuses: Mapping[int, str], at: float) -> None:
        """group_config_status (`synced` / `not synced`) of agents whose status changed; listeners told."""
        known = {agent_id: value for agent_id, value in statuses.items() if agent_id in self.view}
        if not known:
            return
        with self._writer.lock:
            self._writer.batch.config_statuses.update(known)
        for listener in self._config_listeners:
            for agent_id, value in known.items():
                listener(agent_id, value, at)

    def update_columns(self, update: ColumnUpdate) -> None:
        """`sync-agent-info-set`: the descriptive columns; statuses go through `submit()` separately."""
        if update.agent_id in self.view:
            with self._writer.lock:
                self._writer.batch.column_updates.append(update)

    # -- commits and maintenance ----------------------------------------------------------------------------

    def committed(self) -> Future[None]:
        """A future done once everything accepted before this call is committed (for the query socket)."""
        future: Future[None] = Future()

        def done() -> None:
            if not future.done():
                future.set_result(None)

        if not self._writer.when_committed(done):
            future.set_exception(StoreClosed())
        return future

    def flush_soon(self) -> None:
        self._writer.wake()

    def flush_wait(self, timeout: float = 30.0) -> bool:
        """Block until everything submitted before this call is committed (for start-up and tests)."""
        return self._writer.flush_wait(timeout)

    def observe_flushes(self, observer: FlushObserver | None) -> None:
        """`observer(batch, seconds, committed_at)` after each commit, on the writer thread (metrics)."""
        self._writer.on_flush = observer

    @property
    def flushes(self) -> int:
        return self._writer.flushes

    @property
    def write_errors(self) -> int:
        return self._writer.write_errors

    def vacuum(self, agent_id: int | None = None) -> Future[int]:
        """Compact the global database (or one agent's) on the writer thread, after the pending batch."""
        if agent_id is None:
            return self._writer.run_job(lambda backend: backend.vacuum(self.clock()))
        return self._writer.run_job(lambda backend: backend.vacuum_agent_db(agent_id))

    def fragmentation(self, agent_id: int | None = None) -> Fragmentation:
        """Blocking, read-only: call it from a thread."""
        return self.backend.fragmentation(agent_id)

    @property
    def outbox_encoder(self) -> OutboxEncoder | None:
        """The subscriber's encoder of status events (for writes made outside the writer: a take-over)."""
        return self._outbox_encoder

    # -- several nodes (docs/cluster.md): what the database says of agents another node took ------------

    def adopt(self, adopted: Iterable[Adopted]) -> list[int]:
        """The database's status for agents another node holds now, or that were closed already (a
        survivor's take-over): the view takes it, without a transition of this node's (no row, no event,
        no alert, not swept while another node holds it). Loop thread. The agents adopted."""
        return [item.agent_id for item in adopted if self.view.adopt(item)]

    def apply_adopted(self) -> list[int]:
        """What the writer's last commits found (a loss of this node's dropped because another node
        holds the agent, or it was closed already), into the view. Loop thread."""
        with self._writer.lock:
            found, self._writer.adopted = self._writer.adopted, []
        # Only while the view still has the loss that was not written: an agent heard from here since
        # (it came back) keeps what the view says now.
        return self.adopt(
            item
            for item in found
            if (view := self.view.agents.get(item.agent_id)) is not None
            and view.status is ConnectionStatus.DISCONNECTED
            and view.code in LOSS_CODES
        )

    def claim(self, agent_id: int, *, kept: bool) -> None:
        """Bind the agent to this node at the next flush without a status change; `kept`: this node keeps
        its older live connection against a newer one on another node (the cross-node overtake rule)."""
        view = self.view.agents.get(agent_id)
        if view is None:
            return
        view.elsewhere = False
        with self._writer.lock:
            claims = self._writer.batch.claims
            claims[agent_id] = kept or claims.get(agent_id, False)
            self._bound_in[agent_id] = self._writer.filling
        self._writer.wake()

    @property
    def settled(self) -> int:
        """The number of the last batch committed, with all before it (`binding_unsettled`)."""
        return self._writer.settled

    def binding_unsettled(self, agent_id: int, settled: int) -> bool:
        """This node asked to bind the agent in a batch after `settled` (the writer's `settled` read before
        a read of the database): that read may not show this node's binding, so it says nothing of who
        took the agent after it. Loop thread."""
        return self._bound_in.get(agent_id, 0) > settled

    def set_node_epoch(self, epoch: int) -> None:
        """The lease epoch this node holds (agentpulse.cluster), written beside each agent from the next flush."""
        self.backend.set_node_epoch(epoch)

    def reader(self, *, keep_open: bool = False) -> Reader:
        """Named reads that never touch the writer's connection (wdb, the events' outbox, the API)."""
        return self.backend.reader(keep_open=keep_open)
