"""The layout of a manager (or agent) home, as in a Wazuh install. Every path is named here once.

`Home` names each file and directory under the root; `resolve_home` finds the root (`--home`,
`$AGENTPULSE_HOME`, `./var/ossec`, `/var/ossec`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "AGENTPULSE_HOME"
DEV_HOME = Path("var/ossec")  # what `make run` uses
INSTALLED_HOME = Path("/var/ossec")


def agent_db_name(agent_id: int) -> str:
    """The file name of an agent's own database, as Wazuh names it (`001.db`, `1234.db`)."""
    return f"{agent_id:03d}.db"


@dataclass(frozen=True, slots=True)
class Home:
    root: Path

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def ossec_conf(self) -> Path:
        return self.etc / "ossec.conf"

    @property
    def client_keys(self) -> Path:
        return self.etc / "client.keys"

    @property
    def db_dir(self) -> Path:
        return self.root / "queue" / "db"

    @property
    def global_db(self) -> Path:
        return self.db_dir / "global.db"

    def agent_db(self, agent_id: int) -> Path:
        return self.db_dir / agent_db_name(agent_id)

    @property
    def wdb_socket(self) -> Path:
        return self.db_dir / "wdb"

    @property
    def rids_dir(self) -> Path:
        return self.root / "queue" / "rids"

    def rids_file(self, agent_id: str) -> Path:
        return self.rids_dir / agent_id

    @property
    def sender_counter(self) -> Path:
        return self.rids_dir / "sender_counter"

    @property
    def run_dir(self) -> Path:
        return self.root / "var" / "run"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "agentpulse-remoted.pid"

    @property
    def remoted_state(self) -> Path:
        return self.run_dir / "agentpulse-remoted.state"

    @property
    def agentd_state(self) -> Path:
        return self.run_dir / "wazuh-agentd.state"

    @property
    def nats_streams_state(self) -> Path:
        """The streams' health as the manager last read it back (`agentpulse status` shows it)."""
        return self.run_dir / "agentpulse-streams.json"

    @property
    def nats_url_file(self) -> Path:
        return self.run_dir / "nats.url"

    @property
    def nats_store(self) -> Path:
        return self.root / "var" / "nats"

    @property
    def events_spool_dir(self) -> Path:
        """Agent events not yet in JetStream, one folder per remoted process (`ingest/spool.py`)."""
        return self.root / "queue" / "events"

    @property
    def ack_journal_dir(self) -> Path:
        """remoted's acknowledgement journals, one per remoted process (see remoted/journal.py)."""
        return self.root / "queue" / "acks"

    @property
    def shared_dir(self) -> Path:
        """etc/shared: one folder per group (and, on an agent, the pushed merged.mg and its files)."""
        return self.etc / "shared"

    @property
    def multigroups_dir(self) -> Path:
        return self.root / "var" / "multigroups"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def log_file(self) -> Path:
        return self.logs_dir / "ossec.log"

    def create_layout(self) -> None:
        for directory in (self.etc, self.db_dir, self.rids_dir, self.run_dir, self.logs_dir):
            directory.mkdir(parents=True, exist_ok=True)
        # The query socket lives in queue/db: only the manager's user may enter it.
        self.db_dir.chmod(0o750)


def resolve_home(explicit: str | os.PathLike[str] | None = None) -> Home:
    """--home, else $AGENTPULSE_HOME, else ./var/ossec when it exists, else /var/ossec."""
    if explicit:
        return Home(Path(explicit).resolve())
    env = os.environ.get(HOME_ENV)
    if env:
        return Home(Path(env).resolve())
    if DEV_HOME.exists():
        return Home(DEV_HOME.resolve())
    return Home(INSTALLED_HOME)
