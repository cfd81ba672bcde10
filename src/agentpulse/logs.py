"""Logging in Wazuh's one-line shape: `2024/05/01 12:00:00 agentpulse-remoted: INFO: message`.

`setup()` sends every record to stderr and, when given, to the home's `logs/ossec.log`, tagged with the
process name (`agentpulse-remoted` by default; the agent and each remoted worker pass their own).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(process_name)s: %(levelname)s: %(message)s"
DATE_FORMAT = "%Y/%m/%d %H:%M:%S"


class _ProcessName(logging.Filter):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.process_name = name

    def filter(self, record: logging.LogRecord) -> bool:
        record.process_name = self.process_name
        return True


def setup(level: str, log_file: Path | None, process_name: str = "agentpulse-remoted") -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter = logging.Formatter(FORMAT, DATE_FORMAT)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(_ProcessName(process_name))
        root.addHandler(handler)
    root.setLevel(level.upper())
