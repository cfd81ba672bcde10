"""Files of the home the manager speaks about: the state file `agent_control` and the tests read
(`var/run/agentpulse-remoted.state`, written whole or not at all), and a warning for every key file
that every user may read."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from agentpulse import filemodes
from agentpulse.config import Config
from agentpulse.paths import Home
from agentpulse.remoted.keyguard import ReloadCounters

log = logging.getLogger(__name__)


def warn_exposed_files(home: Home, config: Config) -> None:
    """One warning line per existing file that holds keys (or passwords) and every user may read."""
    db_dir = Path(config.database.path) if config.database.path else home.db_dir
    db = db_dir / "global.db"
    paths = [home.client_keys, db, db.with_name("global.db-wal"), db.with_name("global.db-shm")]
    nats = config.nats
    if nats.password or nats.token or config.database.password:
        paths.append(home.ossec_conf)
    paths.extend(Path(name) for name in (nats.creds_file, nats.tls_key) if name)
    for exposed in filemodes.world_readable(paths):
        log.warning("%s", exposed.warning())


def write_state_file(path: Path, started: int, listeners: list[str], reloads: ReloadCounters) -> None:
    """This process, its start, its listeners and the key reloads' counters, replaced atomically."""
    text = (
        f"# State file for agentpulse-remoted\npid='{os.getpid()}'\nstarted='{started}'\n"
        f"listen='{' '.join(listeners)}'\n"
        f"keys_reloads_accepted='{reloads.accepted}'\nkeys_reloads_refused='{reloads.refused}'\n"
        f"keys_last_refused='{int(reloads.last_refused_at)}'\n"
        f"keys_last_refusal='{reloads.last_refusal.replace(chr(39), chr(34))}'\n"
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)
