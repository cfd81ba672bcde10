"""The store's in-memory view of every agent: status, code, history sequence, when it was last heard from.

The view is the truth between flushes: the status model (`status.transition`) is applied to it, on the event
loop only, and what changed is handed to the batch. It keeps agents in the order it last heard from them
(`heard`, the longest silent first), so the sweeper reads the silent ones and stops, instead of walking every
agent each second. Silence is measured on the monotonic clock. No locks, no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from agentpulse.records import StatusUpdate, TransitionRow
from agentpulse.status import LIVE, ConnectionStatus, RowReason, StatusCode, transition


@dataclass(slots=True)
class AgentView:
    """What the store knows of one agent between flushes."""

    status: ConnectionStatus
    code: StatusCode
    seq: int
    last_keepalive: float | None
    seen_monotonic: float = 0.0  # for the sweeper: immune to wall-clock jumps
    has_agent_db: bool = False
    name: str = ""
    register_ip: str = ""
    date_add: float = 0.0  # when it was registered (epoch seconds), for enrolment's replacement rules
    disconnection_time: float = 0.0  # when it last became disconnected, 0 while it is not
    # Several nodes: at start another node held it (PostgreSQL's agent_runtime.node_name), so this node
    # neither resets nor sweeps it until it hears from it itself.
    elsewhere: bool = False


@dataclass(frozen=True, slots=True)
class LoadedAgent:
    """One agent as a backend reads it back at start."""

    agent_id: int
    status: ConnectionStatus
    code: StatusCode
    last_keepalive: float | None
    name: str
    register_ip: str
    has_agent_db: bool
    date_add: float = 0.0
    disconnection_time: float = 0.0
    held_elsewhere: bool = False  # another node of the cluster held it last


@dataclass(frozen=True, slots=True)
class Adopted:
    """The database's word on an agent this node's view had otherwise: another node holds it (`holder`),
    or it was closed already (a survivor's take-over). The view takes this status, code and sequence."""

    agent_id: int
    holder: str | None
    status: ConnectionStatus
    code: StatusCode
    seq: int


class StatusView:
    def __init__(self) -> None:
        self.agents: dict[int, AgentView] = {}
        self.heard: OrderedDict[int, None] = OrderedDict()
        self._retired: dict[int, int] = {}  # last history seq of removed agents, should their id come back
        self._retired_names: dict[int, str] = {}  # for the events that follow a removal
        # agents per (status, code), kept as statuses change: a scrape of the metrics must not walk
        # 200,000 views (`counts()`)
        self._counts: dict[tuple[ConnectionStatus, StatusCode], int] = {}

    def __contains__(self, agent_id: int) -> bool:
        return agent_id in self.agents

    def __len__(self) -> int:
        return len(self.agents)

    def counts(self) -> dict[tuple[ConnectionStatus, StatusCode], int]:
        """Agents per (status, code) now, the empty pairs left out: O(pairs), not O(agents)."""
        return {pair: count for pair, count in self._counts.items() if count}

    def status_counts(self) -> dict[ConnectionStatus, int]:
        """Agents per status now, every status present (the API's summary): O(pairs), not O(agents)."""
        counts = dict.fromkeys(ConnectionStatus, 0)
        for (status, _), count in self._counts.items():
            counts[status] += count
        return counts

    def _count(self, status: ConnectionStatus, code: StatusCode, delta: int) -> None:
        pair = (status, code)
        self._counts[pair] = self._counts.get(pair, 0) + delta

    def get(self, agent_id: int) -> AgentView | None:
        return self.agents.get(agent_id)

    def name_of(self, agent_id: int) -> str | None:
        view = self.agents.get(agent_id)
        return view.name if view is not None else self._retired_names.get(agent_id)

    def load(self, agents: Iterable[LoadedAgent], last_seqs: dict[int, int]) -> None:
        """The view at start; agents live in the last run are the first the sweeper looks at."""
        self._retired = dict(last_seqs)  # what is left once the agents of global.db are taken out, below
        for agent in agents:
            self.agents[agent.agent_id] = AgentView(
                agent.status,
                agent.code,
                int(last_seqs.get(agent.agent_id, 0)),
                agent.last_keepalive,
                has_agent_db=agent.has_agent_db,
                name=agent.name,
                register_ip=agent.register_ip,
                date_add=agent.date_add,
                disconnection_time=agent.disconnection_time,
                elsewhere=agent.held_elsewhere,
            )
            if agent.status in LIVE and not agent.held_elsewhere:
                self.heard[agent.agent_id] = None
            self._retired.pop(agent.agent_id, None)
            self._count(agent.status, agent.code, 1)

    def add(self, agent_id: int, name: str, register_ip: str, date_add: float) -> AgentView:
        """A new agent, never connected; its history goes on from a removed agent with the same id."""
        old = self.agents.get(agent_id)
        if old is not None:
            self._count(old.status, old.code, -1)
        self._count(ConnectionStatus.NEVER_CONNECTED, StatusCode.NONE, 1)
        view = self.agents[agent_id] = AgentView(
            ConnectionStatus.NEVER_CONNECTED,
            StatusCode.NONE,
            self._retired.pop(agent_id, 0),
            None,
            name=name,
            register_ip=register_ip,
            date_add=date_add,
        )
        return view

    def registered(self, agent_id: int, view: AgentView, at: float) -> TransitionRow:
        """The first row of an enrolled agent: `never_connected -> never_connected`, code 0, registered."""
        view.seq += 1
        status = view.status
        return TransitionRow(agent_id, view.seq, status, status, view.code, at, None, RowReason.REGISTERED)

    def heard_from(self, agent_id: int, view: AgentView, monotonic: float) -> bool:
        """The agent talked to this node; True when the view had it as another node's until now."""
        view.seen_monotonic = monotonic
        was_elsewhere = view.elsewhere
        view.elsewhere = False
        heard = self.heard
        heard[agent_id] = None
        heard.move_to_end(agent_id)
        return was_elsewhere

    def adopt(self, adopted: Adopted) -> bool:
        """The database's status for an agent another node holds (or that is closed already): no
        transition of this node's, no sweep while another node holds it. False for an unknown agent."""
        view = self.agents.get(adopted.agent_id)
        if view is None:
            return False
        self._count(view.status, view.code, -1)
        self._count(adopted.status, adopted.code, 1)
        view.status, view.code = adopted.status, adopted.code
        view.seq = max(view.seq, adopted.seq)
        view.elsewhere = adopted.status in LIVE
        self.heard.pop(adopted.agent_id, None)
        return True

    def apply(self, view: AgentView, update: StatusUpdate) -> TransitionRow | None:
        """The status model applied to one agent: the transition row, or None when nothing changed."""
        moved = transition(view.status, update.trigger, update.code)
        if moved is None or (moved.new is view.status and moved.code is view.code):
            return None
        view.seq += 1
        row = TransitionRow(
            update.agent_id,
            view.seq,
            view.status,
            moved.new,
            moved.code,
            update.at,
            view.last_keepalive,
            overload=update.overload if moved.new is ConnectionStatus.DISCONNECTED else 0.0,
        )
        self._count(view.status, view.code, -1)
        self._count(moved.new, moved.code, 1)
        view.status, view.code = moved.new, moved.code
        # as the status write sets disconnection_time (store/sqlite/writes.py)
        view.disconnection_time = update.at if moved.new is ConnectionStatus.DISCONNECTED else 0.0
        if moved.new is ConnectionStatus.DISCONNECTED:
            self.heard.pop(update.agent_id, None)
        return row

    def remove(self, agent_id: int, at: float, reason: RowReason | None = None) -> TransitionRow | None:
        """The agent's last row: `-> disconnected`, code 0 (or its disconnection code if already there)."""
        view = self.agents.pop(agent_id, None)
        self.heard.pop(agent_id, None)
        if view is None:
            return None
        self._count(view.status, view.code, -1)
        code = view.code if view.status is ConnectionStatus.DISCONNECTED else StatusCode.NONE
        view.seq += 1
        self._retired[agent_id] = view.seq
        self._retired_names[agent_id] = view.name
        return TransitionRow(
            agent_id,
            view.seq,
            view.status,
            ConnectionStatus.DISCONNECTED,
            code,
            at,
            view.last_keepalive,
            reason,
        )

    def live(self) -> Iterator[tuple[int, AgentView]]:
        return ((agent_id, view) for agent_id, view in self.agents.items() if view.status in LIVE)

    def silent_since(self, threshold: float) -> list[int]:
        """Live agents not heard from since `threshold` (monotonic), the longest silent first."""
        stale = []
        agents = self.agents
        for agent_id in self.heard:
            view = agents.get(agent_id)
            if view is None:
                continue
            if view.seen_monotonic >= threshold:
                break
            if view.status in LIVE:
                stale.append(agent_id)
        return stale
