"""Established agents first: the rule that holds the listener shut while the loop is behind on the agents it
holds (or the manager on its admission answers), and opens it again once it has caught up
(remoted/lagguard.py)."""

from __future__ import annotations

import asyncio

from agentpulse.remoted.lagguard import HANDSHAKE_COST, LagGuard
from agentpulse.remoted.pipe import PipeEnd, PipeSink
from agentpulse.remoted.replay import PipeReplayGuard
from agentpulse.wire.counters import Verdict


def test_a_loop_on_time_takes_newcomers() -> None:
    guard = LagGuard()
    assert guard.update(0.0, 0, 0, 0.0, 0.0)
    assert guard.update(guard.hold_lag - 0.1, 0, 0, 100.0, 1.0)  # behind, but under the bound
    assert not guard.held and guard.holds == 0


def test_lag_the_handshakes_in_flight_explain_does_not_hold() -> None:
    guard = LagGuard()
    # 3 s behind with 200 startups in flight at 100/s: 2 s of it is theirs, the budget paces those
    assert guard.update(3.0, 200, 0, 100.0, 0.0)
    assert abs(guard.unexplained - 1.0) < 1e-9
    # the same lag with nobody connecting: the agents it holds keep it behind
    assert not guard.update(3.0, 0, 0, 100.0, 1.0)
    assert guard.held and guard.holds == 1


def test_lag_of_an_iteration_that_served_a_burst_of_startups_does_not_hold() -> None:
    guard = LagGuard()
    assert guard.update(0.0, 0, 1000, 100.0, 50.0)
    # one iteration of 3 s read 300 startups (now authenticated, no longer in flight): 3 s of their work
    assert guard.update(3.0, 0, 1300, 100.0, 53.05)
    assert abs(guard.unexplained) < 1e-9
    # later, 3 s behind with no handshake within those 3 s: the agents it holds
    assert not guard.update(3.0, 0, 1300, 100.0, 60.0)


def test_a_handshake_explains_at_most_its_cost_even_when_the_measured_rate_is_low() -> None:
    guard = LagGuard()
    # 2 handshakes/s measured (few agents connected, not a slow loop): 50 in flight explain 1 s, not 25 s
    assert not guard.update(guard.hold_lag + 50 * HANDSHAKE_COST + 0.1, 50, 0, 2.0, 0.0)
    other = LagGuard()
    assert not other.update(guard.hold_lag + 0.5, 10, 0, 0.0, 0.0)  # nothing measured yet: the same cost


def test_held_until_the_loop_stays_caught_up_for_resume_after() -> None:
    guard = LagGuard()
    assert not guard.update(5.0, 0, 0, 0.0, 10.0)
    assert not guard.update(guard.hold_lag - 0.5, 0, 0, 0.0, 11.0)  # under the bound, not caught up
    assert not guard.update(0.1, 0, 0, 0.0, 12.0)  # caught up: the calm begins
    assert not guard.update(0.1, 0, 0, 0.0, 12.0 + guard.resume_after - 0.1)
    assert not guard.update(guard.resume_lag, 0, 0, 0.0, 12.0 + guard.resume_after)  # behind again: calm lost
    assert not guard.update(0.0, 0, 0, 0.0, 20.0)
    assert not guard.update(0.0, 0, 0, 0.0, 20.0 + guard.resume_after - 0.1)
    assert guard.update(0.0, 0, 0, 0.0, 20.0 + guard.resume_after)
    assert not guard.held and guard.holds == 1
    assert not guard.update(5.0, 0, 0, 0.0, 30.0) and guard.holds == 2  # a new hold


def test_queued_connections_are_refused_only_after_refuse_after_held() -> None:
    guard = LagGuard()
    assert not guard.refusing(0.0)
    guard.update(5.0, 0, 0, 0.0, 100.0)
    assert not guard.refusing(100.0 + guard.refuse_after - 0.1)
    assert guard.refusing(100.0 + guard.refuse_after)
    guard.update(0.0, 0, 0, 0.0, 200.0)
    guard.update(0.0, 0, 0, 0.0, 200.0 + guard.resume_after)
    assert not guard.refusing(300.0)


def test_a_manager_slow_to_answer_admissions_holds_newcomers_too() -> None:
    guard = LagGuard()
    assert guard.update(0.0, 50, 0, 100.0, 0.0, answer_wait=1.0)  # answers within the bound
    # the loop is on time, but the manager has not answered a newcomer's admission for 2.5 s
    assert not guard.update(0.0, 50, 0, 100.0, 1.0, answer_wait=guard.hold_lag + 0.5)
    assert not guard.update(0.0, 0, 0, 100.0, 2.0, answer_wait=guard.resume_lag)  # still waiting
    assert not guard.update(0.0, 0, 0, 100.0, 3.0)  # answered: the calm begins
    assert guard.update(0.0, 0, 0, 100.0, 3.0 + guard.resume_after)


def test_the_oldest_unanswered_admission_question_is_what_waits() -> None:
    async def scenario() -> list[float]:
        now = [10.0]
        guard = PipeReplayGuard(PipeSink(PipeEnd(lambda batch: None, lambda: None)), lambda: now[0])
        waits = [guard.unanswered_for()]
        guard.ask(1, 5, True, 0, lambda answer: None)  # request 1
        now[0] += 1.0
        guard.ask(2, 5, True, 0, lambda answer: None)  # request 2
        now[0] += 2.0
        waits.append(guard.unanswered_for())
        guard.answered(1, Verdict.ADMIT.value, 5)
        waits.append(guard.unanswered_for())
        guard.answered(2, Verdict.ADMIT.value, 5)
        waits.append(guard.unanswered_for())
        return waits

    assert asyncio.run(scenario()) == [0.0, 3.0, 2.0, 0.0]
