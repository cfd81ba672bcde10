"""How long a manager start takes when N agents were live in the last run: this build against a baseline.

The restart storm's start (`bench/fleet.py --restart-storm`) without the fleet: one home with N agents, all
`active` in global.db (as a manager stopped under its fleet leaves them); the manager is started, and the
bench times, from the launch, the log line that says the code-5 reset is committed (`Started: ...`) and
the moment the port is open (the state file names it: every worker listens), then stops it and checks that
each agent got its code 5. Each round starts the baseline tree (`--baseline-src`, e.g. `git archive main
src`) and this one back to back, on copies of the same home, so both see the same machine.

    .venv/bin/python bench/start.py --agents 50000 --workers 3 --baseline-src /tmp/base/src --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fleet

SRC = Path(__file__).resolve().parent.parent / "src"
START_TIMEOUT = 120.0
POLL = 0.01
# Log lines that mark a step: the store is open (the services start after it: with the embedded NATS,
# its start is the first line), and the code-5 reset is committed.
MARKERS = {"store_open_s": b"Embedded nats-server started", "reset_committed_s": b"Started: "}


def launch(home: Path, src: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(src))
    log = open(home / "manager.out", "ab")  # noqa: SIM115 - the child owns it
    return subprocess.Popen(
        [sys.executable, "-m", "agentpulse", "start", "--home", str(home), "--log-level", "debug"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env=env,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=150)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def make_live(home: Path) -> int:
    db = sqlite3.connect(home / "queue" / "db" / "global.db")
    try:
        count = db.execute(
            "UPDATE agent SET connection_status = 'active', status_code = 0 WHERE id != 0"
        ).rowcount
        db.commit()
        return count
    finally:
        db.close()


def code5_rows(home: Path) -> int:
    db = sqlite3.connect(home / "queue" / "db" / "global.db")
    try:
        return int(
            db.execute("SELECT COUNT(*) FROM agent_status_history WHERE status_code = 5").fetchone()[0]
        )
    finally:
        db.close()


def timed_start(home: Path, port: int, src: Path) -> dict[str, float]:
    """Seconds from the launch to the reset's commit (its log line) and to the open port."""
    state = home / "var" / "run" / "agentpulse-remoted.state"
    state.unlink(missing_ok=True)
    out = home / "manager.out"
    offset = out.stat().st_size if out.exists() else 0
    began = time.monotonic()
    process = launch(home, src)
    times: dict[str, float] = {}
    try:
        while time.monotonic() - began < START_TIMEOUT:
            if process.poll() is not None:
                raise RuntimeError(f"manager exited: {out.read_text(errors='replace')[-2000:]}")
            now = time.monotonic() - began
            if "reset_committed_s" not in times:
                with open(out, "rb") as handle:
                    handle.seek(offset)
                    text = handle.read()
                for key, marker in MARKERS.items():
                    if key not in times and marker in text:
                        times[key] = now
            if state.exists() and f":{port}/" in state.read_text():
                times["listening_s"] = now
                times.setdefault("reset_committed_s", now)
                return times
            time.sleep(POLL)
        raise TimeoutError("the manager did not listen")
    finally:
        stop(process)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=50000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--nats", default="embedded", help="embedded | none")
    parser.add_argument("--baseline-src", type=Path, help="the src/ of the build to compare with")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args()
    fleet.OUT.mkdir(exist_ok=True)
    template = fleet.OUT / "start-home"
    port = fleet.free_port()
    fleet.write_home(template, port, args.workers, args.nats, 20.0, args.agents)
    first = launch(template, SRC)  # creates global.db with every agent
    try:
        deadline = time.monotonic() + START_TIMEOUT
        state = template / "var" / "run" / "agentpulse-remoted.state"
        while not (state.exists() and f":{port}/" in state.read_text()):
            if time.monotonic() > deadline or first.poll() is not None:
                raise RuntimeError("the first start failed")
            time.sleep(0.1)
    finally:
        stop(first)
    builds = {"this build": SRC}
    if args.baseline_src is not None:
        builds = {"baseline": args.baseline_src.resolve(), **builds}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in builds}
    for _ in range(args.rounds):
        for name, src in builds.items():
            home = fleet.OUT / "start-run"
            shutil.rmtree(home, ignore_errors=True)
            shutil.copytree(template, home)
            live = make_live(home)
            before = code5_rows(home)
            times = timed_start(home, port, src)
            times["code5_rows"] = code5_rows(home) - before
            times["live"] = live
            times["load_average_1m"] = os.getloadavg()[0]
            runs[name].append(times)
            print(name, json.dumps(times), flush=True)
    report = {
        "command": " ".join(sys.argv),
        "agents": args.agents,
        "workers": args.workers,
        "runs": runs,
        "median": {
            name: {
                key: round(statistics.median(run[key] for run in results), 2)
                for key in ("store_open_s", "reset_committed_s", "listening_s")
                if all(key in run for run in results)
            }
            for name, results in runs.items()
        },
    }
    print(json.dumps(report, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))
    bad = [run for results in runs.values() for run in results if run["code5_rows"] != run["live"]]
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
