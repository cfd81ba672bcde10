"""The reload guard: a file with an invalid line is refused (even forced), one that removes more agents
than the limits allow is refused unless forced, and what is counted against the limits."""

from __future__ import annotations

import pytest

from agentpulse.remoted.keyguard import ReloadCounters, ReloadLimits, Verdict, decide
from agentpulse.wire.keys import KEY_LENGTH, CheckedKeys, check_keys


def _key(number: int) -> str:
    return f"{number:0{KEY_LENGTH}x}"


def _line(number: int, name: str | None = None) -> str:
    return f"{number:03d} {name or f'agent-{number:03d}'} any {_key(number)}"


def _file(numbers: range | list[int]) -> CheckedKeys:
    return check_keys("".join(_line(n) + "\n" for n in numbers).encode())


def _current(numbers: range | list[int]) -> dict[int, str]:
    return {n: _line(n) for n in numbers}


@pytest.mark.parametrize(
    ("known", "allowed"),
    [(0, 1), (1, 1), (5, 1), (10, 1), (19, 1), (20, 2), (999, 99), (1000, 100), (100_000, 100)],
)
def test_one_reload_may_remove_ten_percent_and_at_most_100_and_always_one(known: int, allowed: int) -> None:
    assert ReloadLimits().allowed(known) == allowed


def test_max_removed_zero_means_every_removal_needs_force() -> None:
    assert ReloadLimits(max_removed=0).allowed(1000) == 0
    decision = decide(_current(range(1, 6)), _file(range(1, 5)), ReloadLimits(max_removed=0))
    assert decision.verdict is Verdict.TOO_MANY_REMOVED


def test_removing_one_of_five_is_accepted() -> None:
    decision = decide(_current(range(1, 6)), _file(range(1, 5)), ReloadLimits())
    assert decision.verdict is Verdict.ACCEPTED
    assert (decision.agents, decision.added, decision.removed, decision.changed) == (4, 0, (5,), 0)
    assert decision.message() == "accepted: 4 agents, +0 -1"


def test_removing_four_of_five_is_refused_then_accepted_when_forced() -> None:
    refused = decide(_current(range(1, 6)), _file([1]), ReloadLimits())
    assert refused.verdict is Verdict.TOO_MANY_REMOVED and not refused.accepted
    assert refused.message().startswith("refused: it removes 4 of 5 agents, more than the 1 allowed at once")
    assert "--force" in refused.message()
    forced = decide(_current(range(1, 6)), _file([1]), ReloadLimits(), force=True)
    assert forced.verdict is Verdict.FORCED and forced.accepted
    assert forced.message() == "accepted: 1 agents, +0 -4 (forced)"


def test_an_invalid_line_is_refused_even_forced_and_named() -> None:
    checked = check_keys((_line(1) + "\n" + _line(2)[:-5] + "\n" + _line(3) + "\n").encode())
    decision = decide(_current(range(1, 4)), checked, ReloadLimits(), force=True)
    assert decision.verdict is Verdict.INVALID and not decision.accepted
    assert decision.removed == ()
    assert decision.message() == (
        "refused: 1 invalid line: line 2: key of 59 characters, expected 64 hex characters; the old keys "
        "stay; invalid lines are never accepted, not even with --force: fix the file"
    )


def test_many_invalid_lines_are_counted_and_the_first_few_named() -> None:
    checked = check_keys(b"\x00\n" * 40)
    text = decide({}, checked, ReloadLimits()).message()
    assert text.startswith("refused: 40 invalid lines: line 1: NUL byte; line 2: NUL byte;")
    assert "; and 35 more;" in text


def test_additions_and_changed_keys_do_not_count_as_removals() -> None:
    current = _current(range(1, 6))
    current[2] = _line(2, "renamed")
    decision = decide(current, _file(range(1, 9)), ReloadLimits())
    assert decision.verdict is Verdict.ACCEPTED
    assert (decision.added, decision.changed, decision.removed) == (3, 1, ())


def test_agents_only_global_db_has_count_as_removed() -> None:
    # a start refused to purge 3 agents of global.db: a reload still counts them, and --force purges them
    decision = decide(_current(range(1, 3)), _file(range(1, 3)), ReloadLimits(), also_known={1, 2, 3, 4, 5})
    assert (decision.verdict, decision.removed, decision.known) == (Verdict.TOO_MANY_REMOVED, (3, 4, 5), 5)
    forced = decide(
        _current(range(1, 3)), _file(range(1, 3)), ReloadLimits(), also_known={1, 2, 3, 4, 5}, force=True
    )
    assert forced.removed == (3, 4, 5)


def test_a_missing_or_empty_file_removing_everyone_is_refused() -> None:
    decision = decide(_current(range(1, 6)), check_keys(b""), ReloadLimits())
    assert decision.verdict is Verdict.TOO_MANY_REMOVED


def test_the_answer_lists_at_most_50_problems() -> None:
    answer = decide({}, check_keys(b"\x00\n" * 500), ReloadLimits()).as_dict()
    assert answer["invalid_lines"] == 500
    assert isinstance(answer["problems"], list) and len(answer["problems"]) == 50
    assert answer["accepted"] is False and answer["verdict"] == "invalid"


def test_counters_count_refusals_with_their_reason() -> None:
    counters = ReloadCounters()
    counters.count(decide(_current(range(1, 6)), _file(range(1, 5)), ReloadLimits()), 10.0)
    counters.count(decide(_current(range(1, 6)), _file([1]), ReloadLimits()), 20.0)
    assert (counters.accepted, counters.refused, counters.last_refused_at) == (1, 1, 20.0)
    assert counters.last_refusal.startswith("refused: it removes 4 of 5")
