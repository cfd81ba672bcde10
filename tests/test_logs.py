"""The log line: Wazuh's shape, one record per line whatever the data, tracebacks kept readable under it."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentpulse import logs

FORGED = "agentpulse-remoted: ERROR: FORGED LOG LINE"
RECORD = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d agentpulse-test: [A-Z]+: ")


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "logs" / "ossec.log"
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    logs.setup("info", path, process_name="agentpulse-test")
    try:
        yield path
    finally:
        for handler in list(root.handlers):
            handler.close()
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])


def lines(path: Path) -> list[str]:
    return path.read_bytes().decode("utf-8").split("\n")[:-1]


def test_an_argument_with_a_newline_forges_no_line(log_file: Path) -> None:
    logging.getLogger("t").warning("Agent %s refused (version %s)", "001", "v9\n" + FORGED + "\r\x1b[2J\x00")
    (line,) = lines(log_file)
    assert RECORD.match(line)
    assert line.endswith("Agent 001 refused (version v9\\n" + FORGED + "\\r\\x1b[2J\\x00)")


def test_a_message_with_control_characters_is_escaped_too(log_file: Path) -> None:
    # Handed to agentpulse's handlers only: pytest's capture would keep the raw record, and a lone
    # surrogate cannot cross to pytest-xdist's controller (execnet sends only UTF-8 strings).
    record = logging.LogRecord("t", logging.ERROR, __file__, 0, "raw\n" + FORGED + "\ud800", None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, logs.LineFormatter):
            handler.handle(record)
    (line,) = lines(log_file)
    assert line.endswith(": ERROR: raw\\n" + FORGED + "\\ud800")


def test_a_traceback_stays_multi_line_and_every_line_is_indented(log_file: Path) -> None:
    try:
        raise ValueError("bad\n" + FORGED + "\x1b[2J")
    except ValueError:
        logging.getLogger("t").exception("Query socket: %r failed", "x")
    first, *rest = lines(log_file)
    assert RECORD.match(first) and first.endswith("ERROR: Query socket: 'x' failed")
    assert rest[0] == logs.CONTINUATION + "Traceback (most recent call last):"
    assert any(line.lstrip().startswith('raise ValueError("bad') for line in rest)
    assert rest[-2:] == [logs.CONTINUATION + "ValueError: bad", logs.CONTINUATION + FORGED + "\\x1b[2J"]
    assert all(line.startswith(logs.CONTINUATION) for line in rest)


def test_the_record_line_keeps_wazuhs_shape(log_file: Path) -> None:
    logging.getLogger("t").info("Listening on %s:%d/%s", "127.0.0.1", 1514, "tcp")
    (line,) = lines(log_file)
    assert RECORD.match(line) and line.endswith(" agentpulse-test: INFO: Listening on 127.0.0.1:1514/tcp")
