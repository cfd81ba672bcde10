"""Shared fixtures: paths to the protocol reference that is our contract."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

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
