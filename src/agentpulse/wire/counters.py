"""Message counters (docs/protocol.md): the sender's global:local pair, and the receiver's replay rules.

The receiver side is the danger: with Wazuh's default (`verify_msg_id` off) a captured message decrypts
as well the thousandth time as the first. `ReceiverCounter` keeps the highest counter accepted from one
agent and checks messages against it; `first_message_verdict()` decides whether a message that arrives
on a connection other than the agent's current one may start using it. Pure values: the `rids` files
are read and written by `agentpulse.rids`; which connection is current is remoted's business.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from agentpulse.wire.errors import Reason, WireError
from agentpulse.wire.secure import LOCAL_MAX

U32_MAX = 0xFFFFFFFF
# fscanf("%u:%u"): the file is rewritten in place without truncation, so anything may follow.
_COUNTER_TEXT = re.compile(rb"\s*(\d+):(\d+)")
# The local counter is four digits on the wire, so global * 10,000 + local orders every pair the way the
# sender made them (global first) and no two pairs share a number.
SEQUENCE_LOCAL = 10_000
# UDP datagrams may arrive out of order: one up to this many messages older than the newest is still
# taken, once. (TCP keeps order, but an agent seals in several threads: see `ReceiverCounter`.)
UDP_WINDOW = 64
_WINDOW_MASK = (1 << UDP_WINDOW) - 1


def sequence(global_counter: int, local_counter: int) -> int:
    """One number for a global:local pair, growing as the sender's counter does."""
    return global_counter * SEQUENCE_LOCAL + local_counter


def pair_text(seq: int) -> str:
    """`global:local`, for log lines."""
    global_counter, local_counter = divmod(seq, SEQUENCE_LOCAL)
    return f"{global_counter}:{local_counter}"


@dataclass(slots=True)
class SenderCounter:
    """Process-wide counter of a sender. `advance()` gives the pair for the next message."""

    global_counter: int = 0
    local_counter: int = 0

    def advance(self) -> tuple[int, int]:
        if self.local_counter >= LOCAL_MAX:
            self.local_counter = 0
            self.global_counter = (self.global_counter + 1) & U32_MAX
        self.local_counter += 1
        return self.global_counter, self.local_counter

    def to_text(self) -> bytes:
        return b"%u:%u:" % (self.global_counter, self.local_counter)

    @classmethod
    def from_text(cls, data: bytes) -> SenderCounter:
        """Parse `<global>:<local>:`; anything unreadable starts again at 0:0, as a missing file does."""
        match = _COUNTER_TEXT.match(data)
        if match is None:
            return cls()
        return cls(int(match.group(1)) & U32_MAX, int(match.group(2)) & U32_MAX)


class Holder(enum.Enum):
    """Whether another connection holds the agent when a message arrives on a new one."""

    NONE = "none"  # no live connection of the agent (it closed, or there never was one)
    LIVE = "live"  # a connection that heard from the agent within connection_overtake_time
    STALE = "stale"  # a connection silent for longer than connection_overtake_time: it may be overtaken


class Verdict(enum.Enum):
    """What becomes of the first message on a connection that is not the agent's current one."""

    ADMIT = "admit"  # newer than anything accepted before: it may only come from the agent
    CHALLENGE = "challenge"  # a startup with old counters: a reinstall, or a replay; the agent must prove it
    KEY_IN_USE = "key in use"  # another connection holds the agent (reference 3.3 step 3)
    REPLAY = "replay"  # old counters and no startup, or resets refused (verify_msg_id)


def first_message_verdict(*, highest: int, seq: int, startup: bool, holder: Holder, strict: bool) -> Verdict:
    """The rule for a message on a connection that is not the agent's current one.

    `highest` is the highest counter ever accepted from the agent (0: none). A live holder keeps the key.
    Counters newer than `highest` cannot be a replay. Old counters are refused unless the message is a
    startup, no other connection holds the agent and resets are allowed (not `strict`): an agent whose
    sender_counter was deleted (reinstall) starts again at 0:1, so its startup is taken on condition
    that it answers a request (the caller's challenge) which a replayed capture cannot.
    """
    if holder is Holder.LIVE:
        return Verdict.KEY_IN_USE
    if seq > highest:
        return Verdict.ADMIT
    if holder is Holder.STALE:
        return Verdict.KEY_IN_USE  # a reset waits until the old connection is gone
    if startup and not strict:
        return Verdict.CHALLENGE
    return Verdict.REPLAY


@dataclass(slots=True)
class ReceiverCounter:
    """The counters accepted from one agent: the highest ever (what a new connection must beat), and the
    highest on its current connection with which of the `UDP_WINDOW` below it were seen (UDP only).

    On the agent's current TCP connection nothing is refused by default: Wazuh's agent seals a message
    before it takes the send lock, so two threads can put their messages on the wire in the other order,
    and a replay on an established connection needs a hijacked TCP stream. `note()` just keeps the
    highest. `accept_strict()` is Wazuh's verify_msg_id rule; `accept_window()` is for UDP, where
    anyone can send from the agent's address.
    """

    highest: int = 0  # the highest counter ever accepted from the agent (never lowered)
    current: int = 0  # the highest on the current connection (below `highest` after a reset)
    seen: int = 0  # bit i: the message numbered current - i was accepted (UDP)

    def note(self, seq: int) -> None:
        if seq > self.current:
            self.current = seq
            if seq > self.highest:
                self.highest = seq

    def accept_strict(self, seq: int) -> None:
        """Wazuh's verify_msg_id=1: newer than the last, or refused (a lower global is an old counter)."""
        if seq <= self.highest:
            if seq // SEQUENCE_LOCAL < self.highest // SEQUENCE_LOCAL:
                raise WireError(
                    Reason.OLD_COUNTER,
                    f"global counter {seq // SEQUENCE_LOCAL} < last accepted {self.highest // SEQUENCE_LOCAL}",
                )
            raise WireError(
                Reason.DUPLICATE_COUNTER,
                f"counter {pair_text(seq)} <= last accepted {pair_text(self.highest)}",
            )
        self.restart(seq)

    def accept_window(self, seq: int) -> None:
        """Newer than the connection's highest, or one of the `UDP_WINDOW` below it not seen yet."""
        current = self.current
        if seq > current:
            shift = seq - current
            self.seen = ((self.seen << shift) | 1) & _WINDOW_MASK if shift < UDP_WINDOW else 1
            self.current = seq
            if seq > self.highest:
                self.highest = seq
            return
        age = current - seq
        if age >= UDP_WINDOW:
            raise WireError(
                Reason.OLD_COUNTER,
                f"counter {pair_text(seq)} is older than the window below {pair_text(current)}",
            )
        bit = 1 << age
        if self.seen & bit:
            raise WireError(Reason.DUPLICATE_COUNTER, f"counter {pair_text(seq)} was accepted before")
        self.seen |= bit

    def restart(self, seq: int) -> None:
        """A connection admitted at `seq` becomes the current one: its counting starts there."""
        self.current = seq
        self.seen = 1
        if seq > self.highest:
            self.highest = seq

    def to_text(self) -> bytes:
        return b"%u:%u:" % divmod(self.highest, SEQUENCE_LOCAL)

    @classmethod
    def from_text(cls, data: bytes) -> ReceiverCounter:
        sender = SenderCounter.from_text(data)
        seq = sequence(sender.global_counter, sender.local_counter)
        return cls(seq, seq)
