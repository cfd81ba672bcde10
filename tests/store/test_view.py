"""The status view: silence order for the sweeper, history sequences across a removal, names kept."""

from __future__ import annotations

from agentpulse.records import StatusUpdate
from agentpulse.status import ConnectionStatus, StatusCode, Trigger
from agentpulse.store.view import LoadedAgent, StatusView


def _loaded(agent_id: int, status: ConnectionStatus) -> LoadedAgent:
    return LoadedAgent(agent_id, status, StatusCode.NONE, None, f"agent-{agent_id}", "any", False)


def test_agents_live_at_start_are_the_first_the_sweeper_reads() -> None:
    view = StatusView()
    view.load([_loaded(1, ConnectionStatus.ACTIVE), _loaded(2, ConnectionStatus.DISCONNECTED)], {1: 4})
    assert list(view.heard) == [1]
    agent = view.get(1)
    assert agent is not None and agent.seq == 4


def test_silent_since_lists_live_agents_longest_silent_first_and_stops_at_the_first_recent() -> None:
    view = StatusView()
    for agent_id in (1, 2, 3):
        view.add(agent_id, f"a-{agent_id}", "any", 0.0)
        agent = view.agents[agent_id]
        view.apply(agent, StatusUpdate(agent_id, Trigger.STARTUP, 1.0))
    view.heard_from(2, view.agents[2], 10.0)
    view.heard_from(1, view.agents[1], 20.0)
    view.heard_from(3, view.agents[3], 30.0)
    assert view.silent_since(25.0) == [2, 1]
    assert view.silent_since(5.0) == []


def test_a_disconnection_takes_the_agent_out_of_the_silence_order() -> None:
    view = StatusView()
    view.add(1, "a-1", "any", 0.0)
    agent = view.agents[1]
    view.apply(agent, StatusUpdate(1, Trigger.STARTUP, 1.0))
    view.heard_from(1, agent, 1.0)
    row = view.apply(agent, StatusUpdate(1, Trigger.SHUTDOWN, 2.0))
    assert row is not None and row.code is StatusCode.SHUTDOWN_RECEIVED
    assert 1 not in view.heard and view.silent_since(100.0) == []


def test_a_removed_id_added_again_goes_on_with_its_history_sequence_and_keeps_its_name_meanwhile() -> None:
    view = StatusView()
    view.add(1, "web-01", "any", 0.0)
    view.apply(view.agents[1], StatusUpdate(1, Trigger.STARTUP, 1.0))
    removal = view.remove(1, 2.0)
    assert removal is not None and removal.seq == 2
    assert removal.to_status is ConnectionStatus.DISCONNECTED and removal.code is StatusCode.NONE
    assert 1 not in view and view.name_of(1) == "web-01"
    view.add(1, "web-01b", "any", 0.0)
    assert view.agents[1].seq == 2 and view.name_of(1) == "web-01b"


def test_a_change_to_the_same_status_and_code_is_no_row() -> None:
    view = StatusView()
    view.add(1, "a-1", "any", 0.0)
    agent = view.agents[1]
    view.apply(agent, StatusUpdate(1, Trigger.ALIVE, 1.0))
    assert view.apply(agent, StatusUpdate(1, Trigger.ALIVE, 2.0)) is None
    assert agent.seq == 1


def test_counts_follow_every_status_change_add_and_removal() -> None:
    from agentpulse.records import StatusUpdate
    from agentpulse.status import ConnectionStatus, StatusCode, Trigger
    from agentpulse.store.view import StatusView

    view = StatusView()
    for agent_id in (1, 2, 3):
        view.add(agent_id, f"a{agent_id}", "any", 0.0)
    never = (ConnectionStatus.NEVER_CONNECTED, StatusCode.NONE)
    assert view.counts() == {never: 3}
    one = view.agents[1]
    view.apply(one, StatusUpdate(1, Trigger.STARTUP, 1.0))
    view.apply(one, StatusUpdate(1, Trigger.ALIVE, 2.0))
    view.apply(one, StatusUpdate(1, Trigger.ALIVE, 3.0))  # no change: no count moves
    view.apply(view.agents[2], StatusUpdate(2, Trigger.STARTUP, 1.0))
    view.apply(view.agents[2], StatusUpdate(2, Trigger.SHUTDOWN, 2.0))
    assert view.counts() == {
        never: 1,
        (ConnectionStatus.ACTIVE, StatusCode.NONE): 1,
        (ConnectionStatus.DISCONNECTED, StatusCode.SHUTDOWN_RECEIVED): 1,
    }
    view.remove(1, 4.0)
    view.add(2, "again", "any", 5.0)  # an id re-added replaces its old view
    assert view.counts() == {never: 2}
