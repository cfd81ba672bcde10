"""Counters: the sender's rollover and file text, and the receiver's replay rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentpulse.wire.counters import (
    UDP_WINDOW,
    Holder,
    ReceiverCounter,
    SenderCounter,
    Verdict,
    first_message_verdict,
    sequence,
)
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


def test_a_sequence_orders_pairs_as_the_sender_makes_them() -> None:
    counter = SenderCounter(3, 9996)
    pairs = [counter.advance() for _ in range(3)]
    numbers = [sequence(*pair) for pair in pairs]
    assert numbers == sorted(numbers) and len(set(numbers)) == 3
    assert sequence(4, 1) > sequence(3, 9999)


def test_on_the_current_tcp_connection_any_counter_is_noted_and_the_highest_kept() -> None:
    counter = ReceiverCounter()
    for seq in (5, 7, 6, 6):  # two of the agent's threads crossed, then a repeat: none refused
        counter.note(seq)
    assert (counter.highest, counter.current) == (7, 7)


def test_verify_msg_id_refuses_an_equal_counter_as_a_duplicate() -> None:
    counter = ReceiverCounter()
    counter.accept_strict(sequence(5, 10))
    with pytest.raises(WireError) as caught:
        counter.accept_strict(sequence(5, 10))
    assert caught.value.reason is Reason.DUPLICATE_COUNTER


def test_verify_msg_id_refuses_an_older_global_counter() -> None:
    counter = ReceiverCounter()
    counter.accept_strict(sequence(5, 10))
    with pytest.raises(WireError) as caught:
        counter.accept_strict(sequence(4, 9000))
    assert caught.value.reason is Reason.OLD_COUNTER


def test_verify_msg_id_takes_a_higher_global_with_a_lower_local() -> None:
    counter = ReceiverCounter()
    counter.accept_strict(sequence(5, 10))
    counter.accept_strict(sequence(6, 1))
    assert counter.highest == sequence(6, 1)


def test_udp_window_takes_a_late_datagram_once() -> None:
    counter = ReceiverCounter()
    counter.restart(100)
    counter.accept_window(102)
    counter.accept_window(101)  # arrived after 102: taken
    with pytest.raises(WireError) as caught:
        counter.accept_window(101)
    assert caught.value.reason is Reason.DUPLICATE_COUNTER
    assert counter.current == 102


def test_udp_window_refuses_a_datagram_older_than_the_window() -> None:
    counter = ReceiverCounter()
    counter.restart(1000)
    with pytest.raises(WireError) as caught:
        counter.accept_window(1000 - UDP_WINDOW)
    assert caught.value.reason is Reason.OLD_COUNTER
    counter.accept_window(1000 - UDP_WINDOW + 1)


def test_a_reset_connection_counts_from_its_startup_but_the_highest_stays() -> None:
    counter = ReceiverCounter()
    counter.note(5000)
    counter.restart(1)  # a reinstalled agent, admitted after its challenge
    counter.accept_window(2)
    assert (counter.highest, counter.current) == (5000, 2)


def _verdict(highest: int, seq: int, startup: bool = True, holder: Holder = Holder.NONE) -> Verdict:
    return first_message_verdict(highest=highest, seq=seq, startup=startup, holder=holder, strict=False)


def test_a_newer_counter_is_admitted_whatever_the_message() -> None:
    assert _verdict(10, 11, startup=True) is Verdict.ADMIT
    assert _verdict(10, 11, startup=False) is Verdict.ADMIT
    assert _verdict(0, 1, startup=False) is Verdict.ADMIT  # nothing accepted yet


def test_an_old_counter_without_a_startup_is_a_replay() -> None:
    assert _verdict(10, 10, startup=False) is Verdict.REPLAY
    assert _verdict(10, 3, startup=False) is Verdict.REPLAY


def test_an_old_startup_with_no_other_connection_is_challenged() -> None:
    assert _verdict(10, 1) is Verdict.CHALLENGE


def test_a_live_connection_keeps_the_key_even_against_newer_counters() -> None:
    assert _verdict(10, 11, holder=Holder.LIVE) is Verdict.KEY_IN_USE
    assert _verdict(10, 1, holder=Holder.LIVE) is Verdict.KEY_IN_USE


def test_a_stale_connection_is_overtaken_by_newer_counters_only() -> None:
    assert _verdict(10, 11, holder=Holder.STALE) is Verdict.ADMIT
    assert _verdict(10, 1, holder=Holder.STALE) is Verdict.KEY_IN_USE  # a reset waits until it is gone


def test_verify_msg_id_never_takes_old_counters() -> None:
    verdict = first_message_verdict(highest=10, seq=1, startup=True, holder=Holder.NONE, strict=True)
    assert verdict is Verdict.REPLAY


def test_receiver_counter_text_is_the_highest_pair() -> None:
    counter = ReceiverCounter.from_text(b"5:17:99")
    assert counter.highest == sequence(5, 17)
    assert counter.to_text() == b"5:17:"
