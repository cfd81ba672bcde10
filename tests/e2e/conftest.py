"""Fixtures for end-to-end tests: a real manager process, stopped whatever the test does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.harness import ManagerProcess


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[ManagerProcess]:
    process = ManagerProcess(tmp_path / "ossec")
    try:
        yield process
    finally:
        process.stop()
