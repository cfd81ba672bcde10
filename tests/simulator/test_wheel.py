"""The timing wheel alone: deadlines fire in order, never early, once, and after a stall all at once."""

from __future__ import annotations

from agentpulse.simulator.wheel import TimingWheel


class Item:
    def __init__(self, name: str) -> None:
        self.name = name
        self.gen = 0


def test_timing_wheel_fires_due_items_in_deadline_order() -> None:
    wheel: TimingWheel[Item] = TimingWheel(0.01, 16, now=100.0)
    late, early, later = Item("late"), Item("early"), Item("later")
    wheel.schedule(late, 100.05)
    wheel.schedule(early, 100.02)
    wheel.schedule(later, 100.50)  # beyond one revolution of 16 ticks: waits in its slot
    assert wheel.advance(100.01) == []
    assert [item.name for item in wheel.advance(100.06)] == ["early", "late"]
    assert wheel.advance(100.30) == []
    assert [item.name for item in wheel.advance(100.50)] == ["later"]


def test_timing_wheel_rescheduling_or_cancelling_drops_the_old_deadline() -> None:
    wheel: TimingWheel[Item] = TimingWheel(0.01, 16, now=0.0)
    moved, cancelled = Item("moved"), Item("cancelled")
    wheel.schedule(moved, 0.02)
    wheel.schedule(moved, 0.08)
    wheel.schedule(cancelled, 0.03)
    wheel.cancel(cancelled)
    assert wheel.advance(0.05) == []
    assert [item.name for item in wheel.advance(0.08)] == ["moved"]


def test_timing_wheel_never_fires_early_and_catches_up_after_a_stall() -> None:
    wheel: TimingWheel[Item] = TimingWheel(0.01, 8, now=0.0)
    items = [Item(str(n)) for n in range(50)]
    for n, item in enumerate(items):
        wheel.schedule(item, 0.013 * (n + 1))
    assert [item.name for item in wheel.advance(0.0129)] == []
    assert [item.name for item in wheel.advance(5.0)] == [str(n) for n in range(50)]
