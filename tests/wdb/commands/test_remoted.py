"""The `remoted` actor: `reload-keys [force]` asks the manager's reload and answers its decision as JSON;
anything else after `reload-keys` is a syntax error, and a server without reloads says so."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentpulse.remoted.keyguard import ReloadDecision, ReloadLimits, decide
from agentpulse.wire.keys import check_keys
from tests.wdb.served import Served, keys_text


@pytest.fixture
def asked(tmp_path: Path) -> Iterator[tuple[Served, list[bool]]]:
    forced: list[bool] = []
    current = {n: line for n, line in enumerate(keys_text(5).splitlines(), start=1)}

    async def reload_keys(force: bool) -> ReloadDecision:
        forced.append(force)
        return decide(current, check_keys(keys_text(1).encode()), ReloadLimits(), force=force)

    served = Served(tmp_path / "ossec", reload_keys=reload_keys)
    try:
        yield served, forced
    finally:
        served.close()


def test_reload_keys_answers_the_decision(asked: tuple[Served, list[bool]]) -> None:
    served, forced = asked
    status, _, payload = served.query("remoted reload-keys").partition(" ")
    answer = json.loads(payload)
    assert status == "ok" and forced == [False]
    assert (answer["accepted"], answer["verdict"], answer["removed"], answer["allowed"]) == (
        False,
        "too_many_removed",
        4,
        1,
    )
    assert answer["message"].startswith("refused: it removes 4 of 5 agents")


def test_reload_keys_force(asked: tuple[Served, list[bool]]) -> None:
    served, forced = asked
    answer = json.loads(served.query("remoted reload-keys force").partition(" ")[2])
    assert forced == [True]
    assert answer["accepted"] is True and answer["message"] == "accepted: 1 agents, +0 -4 (forced)"


def test_reload_keys_takes_force_or_nothing(asked: tuple[Served, list[bool]]) -> None:
    served, forced = asked
    assert served.query("remoted reload-keys now") == "err Invalid DB query syntax, near 'now'"
    assert (
        served.query("remoted reload-keys force force") == "err Invalid DB query syntax, near 'force force'"
    )
    assert forced == []


def test_a_server_without_reloads_says_so(served: Served) -> None:
    assert served.query("remoted reload-keys") == "err client.keys reloads are not served here"
    assert served.query("remoted nothing") == "err Invalid DB query syntax, near 'nothing'"
