"""The child process of `bench/fuzz.py --engine atheris`: agentpulse is imported under atheris'
instrumentation (so libFuzzer sees its coverage), then bench/fuzz.py runs one target.

    .venv/bin/python bench/fuzz_atheris.py --atheris-child keys --inputs 1000 --seconds 60
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris  # type: ignore[import-not-found]

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

with atheris.instrument_imports(include=["agentpulse"]):
    import tests.fuzz.targets  # noqa: F401 - imported here for the instrumentation

import fuzz  # noqa: E402

if __name__ == "__main__":
    sys.exit(fuzz.main(sys.argv[1:]))
