"""The one table from an event's queue character to its kind, the last token of its NATS subject.

The characters are Wazuh's (`src/headers/mq_op.h`, 4.x); the kind names are agentpulse's and are part of
the subject contract (docs/events.md), so a name never changes once published. Anything not in the table
is `other`; an agent chooses the character, so the kind never carries agent text into a subject.
"""

from __future__ import annotations

from typing import Final

OTHER: Final = "other"

KINDS: Final[dict[int, str]] = {
    ord("1"): "logcollector",  # LOCALFILE_MQ: log lines, command output, "Agent started"
    ord("2"): "syslog",  # SYSLOG_MQ
    ord("3"): "hostinfo",  # HOSTINFO_MQ
    ord("4"): "secure",  # SECURE_MQ
    ord("5"): "dbsync",  # DBSYNC_MQ: syscollector / FIM database synchronisation (JSON)
    ord("8"): "syscheck",  # SYSCHECK_MQ: file integrity monitoring
    ord("9"): "rootcheck",  # ROOTCHECK_MQ
    ord("a"): "mysql",  # MYSQL_MQ
    ord("b"): "postgresql",  # POSTGRESQL_MQ
    ord("c"): "auth",  # AUTH_MQ
    ord("d"): "syscollector",  # SYSCOLLECTOR_MQ: inventory
    ord("e"): "ciscat",  # CISCAT_MQ
    ord("f"): "eventchannel",  # WIN_EVT_MQ: Windows event channel
    ord("p"): "sca",  # SCA_MQ: security configuration assessment
    ord("u"): "upgrade",  # UPGRADE_MQ: agent upgrade results
}

ALL_KINDS: Final = (*KINDS.values(), OTHER)


def kind_of(queue: int) -> str:
    """The kind of a queue character (a byte value); `other` for characters Wazuh does not define."""
    return KINDS.get(queue, OTHER)
