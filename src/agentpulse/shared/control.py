"""`SharedControl`: what the query socket (and through it `agentpulse group`) may ask of the manager's
shared-files rollout. A protocol here, below both: the query socket never imports the rollout."""

from __future__ import annotations

from typing import Protocol

from agentpulse.shared.tree import GroupFile


class SharedControl(Protocol):
    async def reload(self) -> dict[str, str]:
        """Scan the groups' files now; every group's and multi-group's merged.mg md5."""
        ...

    async def files(self, group: str) -> list[GroupFile] | None:
        """The files a merge of the group takes; None when the group has no folder."""
        ...

    async def create_group(self, group: str) -> None: ...

    def push_group(self, group: str) -> int:
        """Push the group's merged.mg to every connected member now; how many were queued."""
        ...

    def group_status(self, group: str) -> dict[str, object]: ...
