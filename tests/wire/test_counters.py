"""Counters: the sender's rollover and file text, and the receiver's replay rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentpulse.wire.counters import ReceiverCounter, SenderCounter
from agentpulse.wire.errors import Reason, WireError


def test_local_counter_runs_to_9997_then_global_goes_up() -> None:
    counter = SenderCounter(3, 9996)
    assert counter.advance() == (3, 9997)
    assert counter.advance() == (4, 1)


def test_first_message_of_a_new_sender_is_0_1() -> None:
    assert SenderCounter().advance() == (0, 1)


def test_counter_file_text_is_global_colon_local_colon() -> None:
    assert SenderCounter(12, 345).to_text() == b"12:345:"


def test_counter_file_with_leftover_characters_is_read_like_fscanf() -> None:
    assert SenderCounter.from_text(b"5:17:9999:") == SenderCounter(5, 17)


def test_unreadable_counter_file_starts_again_at_zero() -> None:
    assert SenderCounter.from_text(b"garbage") == SenderCounter(0, 0)


@given(st.binary(max_size=64))
def test_counter_text_parser_never_raises(data: bytes) -> None:
    SenderCounter.from_text(data)


def test_replay_check_off_accepts_anything() -> None:
    counter = ReceiverCounter(5, 10)
    counter.accept(1, 1, verify=False)
    assert counter == ReceiverCounter(1, 1)


def test_replayed_counter_is_a_duplicate_when_verified() -> None:
    counter = ReceiverCounter(5, 10)
    with pytest.raises(WireError) as caught:
        counter.accept(5, 10, verify=True)
    assert caught.value.reason is Reason.DUPLICATE_COUNTER


def test_older_global_counter_is_refused_when_verified() -> None:
    with pytest.raises(WireError) as caught:
        ReceiverCounter(5, 10).accept(4, 9000, verify=True)
    assert caught.value.reason is Reason.OLD_COUNTER


def test_higher_global_with_lower_local_is_accepted() -> None:
    counter = ReceiverCounter(5, 10)
    counter.accept(6, 1, verify=True)
    assert counter == ReceiverCounter(6, 1)
