"""An exception nobody expected while handling a message closes that connection with one log line: the
type and who sent it, a traceback at most once per interval, never one per message."""

from __future__ import annotations

import logging

import pytest

from agentpulse.agent.connection import AgentCodec
from agentpulse.config import Config
from agentpulse.records import StatusUpdate
from agentpulse.remoted.faults import FaultLog, escaped_traceback
from agentpulse.remoted.keystore import KeyStore
from agentpulse.remoted.server import Remoted
from agentpulse.remoted.session import CloseReason, Session
from agentpulse.wire import control
from agentpulse.wire.keys import KeysFile
from tests.remoted.fakes import FakeTransport, RecordingGrace, RecordingStore

KEYS = KeysFile.parse("001 web-01 any k1\n002 web-02 any k2\n003 web-03 any k3\n")


class BrokenStore(RecordingStore):
    """A store with a bug: every submit raises."""

    def submit(self, update: StatusUpdate) -> None:
        raise RuntimeError("boom \x1b[31m from an agent's bytes")


class Clock:
    mono = 100.0

    def __call__(self) -> float:
        return self.mono


def _remoted(clock: Clock) -> Remoted:
    keys = KeyStore()
    remoted = Remoted(Config(), keys, BrokenStore(), RecordingGrace(), monotonic=clock)
    remoted.keys_changed(keys.load(KEYS))
    return remoted


def _startup(remoted: Remoted, number: int) -> Session:
    key = KEYS.by_id(number)
    assert key is not None
    session = Session(remoted)
    session.connection_made(FakeTransport(("10.0.0.1", 40000 + number)))
    session.data_received(AgentCodec(key).seal(control.build_startup("v4.14.7")))
    return session


def test_an_unexpected_exception_closes_only_that_connection_with_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    remoted = _remoted(clock)
    with caplog.at_level(logging.WARNING):
        sessions = [_startup(remoted, number) for number in (1, 2, 3)]
    assert all(session.close_reason is CloseReason.REFUSED for session in sessions)
    assert remoted.faults.count == 3
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2  # the first with its traceback, the second rate-limited, the third suppressed
    assert "Unexpected RuntimeError while handling a message from agent 001 (1 so far)" in messages[0]
    assert "Traceback" in messages[0] and "\x1b" not in messages[0]
    assert messages[1].startswith(
        "Unexpected RuntimeError while handling a message from agent 002 (2 so far)"
    )
    assert "Traceback" not in messages[1]


def test_the_traceback_comes_again_only_after_its_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    faults = FaultLog(logging.getLogger("test.faults"), clock, traceback_interval=600.0)
    with caplog.at_level(logging.WARNING):
        for step in range(30):
            clock.mono = 100.0 + step * 60.0  # one every minute for half an hour
            faults.record(ValueError("x"), "'10.0.0.1'")
    tracebacks = [record for record in caplog.records if "Traceback" in record.getMessage()]
    assert [record.levelno for record in tracebacks] == [logging.ERROR] * 3  # at 0, 10 and 20 minutes


def test_an_escaped_traceback_shows_control_characters_as_escapes() -> None:
    try:
        raise RuntimeError("\r\nFAKE LOG LINE")
    except RuntimeError as error:
        text = escaped_traceback(error)
    assert "\r" not in text and "FAKE LOG LINE" in text
    assert all(not line.startswith("FAKE") for line in text.splitlines())
    assert text.splitlines()[-1] == "RuntimeError: '\\r\\nFAKE LOG LINE'"
