"""The client.keys reload guard: whether a newly read client.keys replaces the keys remoted accepts.

The danger it owns: a broken, truncated or half-written file read as "these agents were removed"
disconnects them and, with `<purge_removed>`, deletes them from global.db with their files. So a reload is
all or nothing, decided once by the manager (workers take what it accepted): a file with any invalid line
is refused, even forced; one that removes more agents at once than `ReloadLimits` allows is refused unless
forced (`agentpulse keys reload --force`). Pure: it reads sets and counts, the manager applies the verdict.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Set
from dataclasses import dataclass

from agentpulse.wire.keys import CheckedKeys, KeysProblem

__all__ = ["ReloadCounters", "ReloadDecision", "ReloadLimits", "Verdict", "decide"]

SHOWN_PROBLEMS = 5  # invalid lines named in one message; the count says how many more there are
ANSWERED_PROBLEMS = 50  # invalid lines listed in a query-socket answer (which holds 64 KiB at most)
FORCE_HINT = "`agentpulse keys reload --force` accepts it"


@dataclass(frozen=True, slots=True)
class ReloadLimits:
    """`<remote><keys_reload_max_removed>` and `<keys_reload_max_removed_percent>`."""

    max_removed: int = 100
    max_removed_percent: float = 10.0

    def allowed(self, known: int) -> int:
        """How many of `known` agents one reload may remove without --force: the smaller of the two limits,
        and at least one (removing one agent is the everyday case), unless max_removed is 0."""
        share = math.floor(known * self.max_removed_percent / 100)
        return min(self.max_removed, max(1, share))


class Verdict(enum.Enum):
    ACCEPTED = "accepted"
    FORCED = "accepted, forced"  # it removes more than the limits allow, and --force said so
    INVALID = "invalid"  # some line is invalid: never accepted
    TOO_MANY_REMOVED = "too many removed"

    @property
    def accepted(self) -> bool:
        return self in (Verdict.ACCEPTED, Verdict.FORCED)


@dataclass(frozen=True, slots=True)
class ReloadDecision:
    """What a reload would do, and whether it may."""

    verdict: Verdict
    agents: int  # active entries in the new file
    added: int  # ids that are new
    changed: int  # ids whose line changed (their connections are let go)
    removed: tuple[int, ...]  # ids that go (disconnected; purged with <purge_removed>)
    known: int  # the agents the removal is counted against
    allowed: int  # how many of them may go without --force
    problems: tuple[KeysProblem, ...] = ()
    forced: bool = False  # --force was asked for

    @property
    def accepted(self) -> bool:
        return self.verdict.accepted

    def message(self) -> str:
        """One line for the log and for `agentpulse keys reload` (ASCII: problems are escaped)."""
        if self.accepted:
            text = f"accepted: {self.agents} agents, +{self.added} -{len(self.removed)}"
            if self.changed:
                text += f", {self.changed} changed"
            return text + (" (forced)" if self.verdict is Verdict.FORCED else "")
        if self.verdict is Verdict.INVALID:
            return f"refused: {self.problems_text()}; the old keys stay" + (
                "; invalid lines are never accepted, not even with --force: fix the file"
                if self.forced
                else ""
            )
        return (
            f"refused: it removes {len(self.removed)} of {self.known} agents, more than the {self.allowed} "
            f"allowed at once (<keys_reload_max_removed>, <keys_reload_max_removed_percent>); the old keys "
            f"stay; {FORCE_HINT}"
        )

    def problems_text(self) -> str:
        count = len(self.problems)
        shown = "; ".join(
            f"line {p.line_no}: {p.reason}" if p.line_no else p.reason for p in self.problems[:SHOWN_PROBLEMS]
        )
        more = f"; and {count - SHOWN_PROBLEMS} more" if count > SHOWN_PROBLEMS else ""
        return f"{count} invalid line{'s' if count != 1 else ''}: {shown}{more}"

    def as_dict(self) -> dict[str, object]:
        """The answer of the query socket's `remoted reload-keys`."""
        return {
            "accepted": self.accepted,
            "verdict": self.verdict.name.lower(),
            "agents": self.agents,
            "added": self.added,
            "changed": self.changed,
            "removed": len(self.removed),
            "known": self.known,
            "allowed": self.allowed,
            "invalid_lines": len(self.problems),
            "problems": [{"line": p.line_no, "reason": p.reason} for p in self.problems[:ANSWERED_PROBLEMS]],
            "message": self.message(),
        }


def decide(
    current: Mapping[int, str],
    checked: CheckedKeys,
    limits: ReloadLimits,
    *,
    also_known: Set[int] = frozenset(),
    force: bool = False,
) -> ReloadDecision:
    """Judge `checked` against the keys in use (`current`: id -> line) and the other agents a reload
    would remove (`also_known`: those global.db holds, when removed agents are purged)."""
    fresh = {key.number: key.line() for key in checked.keys.active()}
    known = current.keys() | also_known
    allowed = limits.allowed(len(known))
    if not checked.valid:
        return ReloadDecision(
            Verdict.INVALID, len(fresh), 0, 0, (), len(known), allowed, checked.problems, force
        )
    added = sum(1 for number in fresh if number not in current)
    changed = sum(1 for number, line in fresh.items() if number in current and current[number] != line)
    removed = tuple(sorted(number for number in known if number not in fresh))
    verdict = Verdict.ACCEPTED
    if len(removed) > allowed:
        verdict = Verdict.FORCED if force else Verdict.TOO_MANY_REMOVED
    return ReloadDecision(verdict, len(fresh), added, changed, removed, len(known), allowed, (), force)


@dataclass(slots=True)
class ReloadCounters:
    """What the manager counts of its reloads (the state file and `agentpulse status` show them)."""

    accepted: int = 0
    refused: int = 0
    last_refused_at: float = 0.0
    last_refusal: str = ""

    def count(self, decision: ReloadDecision, at: float, message: str | None = None) -> None:
        """One reload judged; `message` says what a refusal did when it is not the usual one (at start)."""
        if decision.accepted:
            self.accepted += 1
        else:
            self.refused += 1
            self.last_refused_at = at
            self.last_refusal = message or decision.message()
