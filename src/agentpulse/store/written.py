"""What the agent table already holds of each agent's keep-alive, for both backends' writers.

Most keep-alives repeat the agent's last one: then only `last_keepalive` moves, and it moves with one
statement per second of arrival for all such agents instead of one per agent. So each writer remembers
the keep-alive whose columns (and the labels whose rows) it last wrote, and forgets an agent whenever
what it wrote may not be there any more (a rollback, a removal, a column update from the query socket).
Runs on the writer thread only.

After a restart nothing is remembered, so each agent's first keep-alive would rewrite its columns and its
labels although the table holds the same (a restart storm: 200,000 updates and label rewrites on top of
the status changes). So the SQLite backend seeds what the table holds at open (`seed`), kept as a hash
of each agent's columns and of its label rows until the agent's first keep-alive is compared with it.
A hash, not the values: 200,000 agents' columns are ~170 MB of strings, their hashes a few MB. Two
different column sets with equal 64-bit hashes would skip one write (an agent's old OS shown until it
changes again): about 1 in 10^19 per agent, accepted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from typing import Any

from agentpulse.store.batch import Batch, stored_labels
from agentpulse.wire.control import Keepalive

Labels = tuple[tuple[str, str], ...]


@dataclass(slots=True)
class KeepaliveWrites:
    """One batch's keep-alives, sorted by what must be written of them."""

    # version, config_sum, merged_sum, manager_host, node_name, ip, os_uname, os_name, os_platform,
    # os_version, os_codename, os_major, os_minor, os_arch, last_keepalive, id: each backend's UPDATE order
    data_rows: list[tuple[object, ...]] = field(default_factory=list)
    touched: dict[int, list[int]] = field(default_factory=dict)  # last_keepalive (whole s) -> agents
    label_agents: list[tuple[int, Keepalive]] = field(default_factory=list)  # whose labels changed


class WrittenKeepalives:
    def __init__(self, manager_host: str, node_name: str) -> None:
        self.manager_host = manager_host
        self.node_name = node_name
        self._data: dict[int, Keepalive] = {}  # the keep-alive whose columns the table holds
        self._labels: dict[int, Labels] = {}  # the labels the table holds
        # Seeded at open, each taken out at the agent's first keep-alive: hashes of the columns (in
        # `_row` order, without last_keepalive and id) and of the sorted label rows the table holds.
        self._table_columns: dict[int, int] = {}
        self._table_labels: dict[int, int] = {}

    def seed(self, columns: Iterable[tuple[Any, ...]], labels: Iterable[tuple[int, str, str]]) -> None:
        """What the table holds: rows of (id, then the columns in `_row` order without last_keepalive),
        and label rows (id, key, value) sorted by id."""
        self._table_columns = {int(row[0]): hash(row[1:]) for row in columns}
        self._table_labels = {
            agent_id: hash(tuple(sorted((key, value) for _, key, value in rows)))
            for agent_id, rows in groupby(labels, key=itemgetter(0))
        }

    def sort(self, batch: Batch) -> KeepaliveWrites:
        """What to write of the batch's keep-alives, taken as written (`rolled_back` undoes that)."""
        writes = KeepaliveWrites()
        for agent_id, (at, keepalive) in batch.keepalives.items():
            if keepalive is None or keepalive == self._data.get(agent_id):
                writes.touched.setdefault(int(at), []).append(agent_id)
                continue
            self._data[agent_id] = keepalive
            row = self._row(agent_id, at, keepalive)
            table = self._table_columns.pop(agent_id, None)
            if table is not None and table == hash(row[:-2]):
                writes.touched.setdefault(int(at), []).append(agent_id)  # as the table holds it
            else:
                writes.data_rows.append(row)
            if self._labels.get(agent_id) != keepalive.labels:
                self._labels[agent_id] = keepalive.labels
                table = self._table_labels.pop(agent_id, None)
                if table is None or table != self._labels_hash(keepalive):
                    writes.label_agents.append((agent_id, keepalive))
        return writes

    def _labels_hash(self, keepalive: Keepalive) -> int:
        return hash(tuple(sorted(stored_labels(keepalive, self.manager_host, self.node_name).items())))

    def _row(self, agent_id: int, at: float, k: Keepalive) -> tuple[object, ...]:
        return (
            k.version,
            k.config_sum,
            k.merged_sum,
            self.manager_host,
            self.node_name,
            k.agent_ip,
            k.uname,
            k.os_name,
            k.os_platform,
            k.os_version,
            k.os_codename,
            k.os_major,
            k.os_minor,
            k.os_arch,
            int(at),
            agent_id,
        )

    def forget(self, agent_id: int) -> None:
        """The agent's row is gone or unknown: its next keep-alive writes columns and labels again."""
        self._data.pop(agent_id, None)
        self._labels.pop(agent_id, None)
        self._table_columns.pop(agent_id, None)
        self._table_labels.pop(agent_id, None)

    def forget_columns(self, agent_id: int) -> None:
        """Its columns were set otherwise (`global update-agent-data`): the next keep-alive writes them."""
        self._data.pop(agent_id, None)
        self._table_columns.pop(agent_id, None)

    def forget_labels(self, agent_id: int) -> None:
        self._labels.pop(agent_id, None)
        self._table_labels.pop(agent_id, None)

    def rolled_back(self, batch: Batch) -> None:
        """What was taken as written for the batch's agents was rolled back."""
        for agent_id in batch.keepalives:
            self.forget(agent_id)
        for update in batch.column_updates:
            self.forget_columns(update.agent_id)
