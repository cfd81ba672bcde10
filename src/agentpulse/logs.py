"""Logging in Wazuh's one-line shape: `2024/05/01 12:00:00 agentpulse-remoted: INFO: message`.

`setup()` sends every record to stderr and, when given, to the home's `logs/ossec.log`, tagged with the
process name. The danger: messages carry agent text; `LineFormatter` escapes them (`escape.for_log`), and
traceback lines are indented, so a line that does not start with whitespace always starts a real record.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from types import TracebackType
from typing import Final, TypeAlias

from agentpulse.escape import for_log

FORMAT: Final = "%(asctime)s %(process_name)s: %(levelname)s: %(message)s"
DATE_FORMAT: Final = "%Y/%m/%d %H:%M:%S"
CONTINUATION: Final = "    "  # before each line of a traceback or stack, under its record
ENCODING: Final = "utf-8"

_ExcInfo: TypeAlias = (
    tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
)


class _ProcessName(logging.Filter):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.process_name = name

    def filter(self, record: logging.LogRecord) -> bool:
        record.process_name = self.process_name
        return True


class LineFormatter(logging.Formatter):
    """Wazuh's line, with the message (arguments included) escaped and tracebacks indented."""

    def __init__(self) -> None:
        super().__init__(FORMAT, DATE_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        # format() sets record.message from getMessage() before every call, so rewriting it here is safe.
        record.message = for_log(record.message)
        return super().formatMessage(record)

    def formatException(self, ei: _ExcInfo) -> str:
        return continuation(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return continuation(super().formatStack(stack_info))


def continuation(text: str) -> str:
    """Multi-line text under a record: every line escaped and indented, so none can pass for a record."""
    return "\n".join(CONTINUATION + for_log(line) for line in text.split("\n"))


def setup(level: str, log_file: Path | None, process_name: str = "agentpulse-remoted") -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    formatter = LineFormatter()
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding=ENCODING))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(_ProcessName(process_name))
        root.addHandler(handler)
    root.setLevel(level.upper())
