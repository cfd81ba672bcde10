"""The loop budget: events may take BUDGET of an iteration, the connection that crosses it waits, and the
waiting ones come back longest-waiting first."""

from __future__ import annotations

from agentpulse.remoted.congestion import LoopBudget


def test_over_only_past_the_budget_of_the_iteration_begun() -> None:
    budget: LoopBudget[str] = LoopBudget(0.01)
    assert not budget.over(100.0)  # no iteration begun
    budget.start(100.0)
    assert not budget.over(100.009)
    assert budget.over(100.011)
    budget.end()
    assert not budget.over(200.0)


def test_waiting_ones_come_back_in_arrival_order_each_once() -> None:
    budget: LoopBudget[str] = LoopBudget()
    assert budget.wait("a") and budget.wait("b") and budget.wait("c")
    assert not budget.wait("a")  # waits already: not counted twice, keeps its place
    budget.forget("b")  # closed
    assert budget.waiting == 2 and budget.pauses == 3
    assert [budget.next_due(), budget.next_due(), budget.next_due()] == ["a", "c", None]
    assert "a" not in budget
