"""Shared fixtures: paths to the protocol reference that is our contract, and a real manager process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import ManagerProcess

REFERENCE_DIRS = [
    Path(__file__).resolve().parents[2] / "shared" / "reference",
    Path(__file__).resolve().parent / "data" / "reference",
]


def reference_dir() -> Path:
    for candidate in REFERENCE_DIRS:
        if (candidate / "vectors.json").exists():
            return candidate
    raise FileNotFoundError("vectors.json not found in " + ", ".join(map(str, REFERENCE_DIRS)))


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((reference_dir() / "vectors.json").read_text())
    return data


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[ManagerProcess]:
    """A manager in tmp_path/ossec, not started: the test sets it up and starts it; stopped at the end."""
    process = ManagerProcess(tmp_path / "ossec")
    try:
        yield process
    finally:
        process.stop()
