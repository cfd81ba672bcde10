"""The `served` fixture of the query-socket tests: a store and its socket, with short guard timeouts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.wdb.served import Served


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    served = Served(tmp_path / "ossec", frame_timeout=0.3, idle_timeout=5, sql_time_limit=1.5)
    try:
        yield served
    finally:
        served.close()
