"""An outbox as the relay sees it (its reader and its store's acks), in memory, for the relay's ordering tests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from agentpulse.events.publisher import OutboxEntry


@dataclass
class Outbox:
    rows: list[OutboxEntry]
    acked: list[int] = field(default_factory=list)

    async def read(self, after: int, limit: int) -> list[OutboxEntry]:
        return [row for row in self.rows if row.row_id > after][:limit]

    async def count(self, after: int) -> int:
        return len(await self.read(after, 1_000_000))

    def ack_outbox(self, ids: list[int]) -> None:
        self.acked.extend(ids)


def entries(*agents_and_seqs: tuple[int, int], first_id: int = 1) -> list[OutboxEntry]:
    """Outbox rows, ids from `first_id`, each a status event of (agent, sequence) whose body is its sequence."""
    return [
        OutboxEntry(
            row_id, f"agent.status.{agent:03d}", f"{agent:03d}:{seq}", json.dumps({"sequence": seq}).encode()
        )
        for row_id, (agent, seq) in enumerate(agents_and_seqs, start=first_id)
    ]
