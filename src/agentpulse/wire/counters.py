"""Message counters (docs/protocol.md): the sender's global:local pair and the receiver's replay rule.

Pure values: the `rids` files are read and written by `agentpulse.rids`, around these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agentpulse.wire.errors import Reason, WireError
from agentpulse.wire.secure import LOCAL_MAX

U32_MAX = 0xFFFFFFFF
# fscanf("%u:%u"): the file is rewritten in place without truncation, so anything may follow.
_COUNTER_TEXT = re.compile(rb"\s*(\d+):(\d+)")


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


@dataclass(slots=True)
class ReceiverCounter:
    """The last global:local pair accepted from one agent."""

    global_counter: int = 0
    local_counter: int = 0

    def accept(self, global_counter: int, local_counter: int, *, verify: bool) -> None:
        """Record a message's pair. With `verify` (Wazuh's verify_msg_id=1) refuse replays.

        Accepted when global is higher, or equal with a higher local. Equal global with a lower or equal
        local is a duplicate; a lower global is what Wazuh treats as a wrong key.
        """
        if verify:
            if global_counter < self.global_counter:
                raise WireError(
                    Reason.OLD_COUNTER,
                    f"global counter {global_counter} < last accepted {self.global_counter}",
                )
            if global_counter == self.global_counter and local_counter <= self.local_counter:
                raise WireError(
                    Reason.DUPLICATE_COUNTER,
                    f"counter {global_counter}:{local_counter} <= last accepted "
                    f"{self.global_counter}:{self.local_counter}",
                )
        self.global_counter = global_counter
        self.local_counter = local_counter

    def to_text(self) -> bytes:
        return b"%u:%u:" % (self.global_counter, self.local_counter)

    @classmethod
    def from_text(cls, data: bytes) -> ReceiverCounter:
        sender = SenderCounter.from_text(data)
        return cls(sender.global_counter, sender.local_counter)
