"""How fast the cluster primitives react, on a throwaway PostgreSQL: a new leader after the leader's process
is killed (SIGKILL) against after it steps down cleanly (the baseline), and how long after a node's last
renewal its survivors see its lease expired.

    .venv/bin/python bench/cluster_failover.py --trials 5

Needs initdb/pg_ctl and the postgres user (run as root). Prints one line per measure: min / median / max.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agentpulse.cluster.leader import LeaderElection
from agentpulse.cluster.lease import NodeLease, connect, read_nodes
from agentpulse.cluster.localpg import LocalPostgres, unavailable

LEADER_SCRIPT = """
import asyncio, sys
from agentpulse.cluster.leader import LeaderElection

async def main():
    election = LeaderElection(sys.argv[1], sys.argv[2], on_elected=lambda: print("elected", flush=True))
    election.start()
    await asyncio.sleep(3600)

asyncio.run(main())
"""


LIMIT = 30.0  # seconds: a measure that takes longer is reported as a failure, not waited for


async def until(check: Callable[[], bool], since: float, what: str) -> None:
    while not check():
        if time.monotonic() - since > LIMIT:
            raise TimeoutError(f"no {what} within {LIMIT:.0f} s")
        await asyncio.sleep(0.005)


async def takeover_after_kill(dsn: str, trial: int) -> float:
    child = subprocess.Popen(
        [sys.executable, "-c", LEADER_SCRIPT, dsn, f"child-{trial}"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        line = await asyncio.to_thread(child.stdout.readline)
        assert line.strip() == "elected", line
        survivor = LeaderElection(dsn, f"survivor-{trial}")
        survivor.start()
        await asyncio.sleep(0.6)
        child.kill()
        killed = time.monotonic()
        await until(lambda: survivor.leader, killed, "a new leader after SIGKILL")
        took = time.monotonic() - killed
        await survivor.stop()
        return took
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


async def takeover_after_stop(dsn: str, trial: int) -> float:
    leader = LeaderElection(dsn, f"leader-{trial}")
    leader.start()
    await until(lambda: leader.leader, time.monotonic(), "the first leader")
    follower = LeaderElection(dsn, f"follower-{trial}")
    follower.start()
    await asyncio.sleep(0.6)
    stopped = time.monotonic()
    await leader.stop()
    await until(lambda: follower.leader, stopped, "a new leader after a clean stop")
    took = time.monotonic() - stopped
    await follower.stop()
    return took


async def expiry_seen(dsn: str, trial: int, ttl: float) -> float:
    """Seconds from a node's death to the survivor seeing its lease expired (at most ttl)."""
    lease = NodeLease(dsn, f"node-{trial}", interval=1.0, ttl=ttl)
    await lease.start()
    await asyncio.sleep(1.0 + 0.37 * trial % 1.0)  # die at a different point of the renewal cycle
    await lease.stop(release=False)
    died = time.monotonic()
    conn = await connect(dsn, "bench")
    try:
        while True:
            rows = {row.name: row for row in await read_nodes(conn)}
            if rows[f"node-{trial}"].expired:
                return time.monotonic() - died
            if time.monotonic() - died > ttl + LIMIT:
                raise TimeoutError(f"node-{trial}'s lease not seen expired")
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


def summary(name: str, values: list[float]) -> str:
    return (
        f"{name:<44} min {min(values):6.3f} s  median {statistics.median(values):6.3f} s  "
        f"max {max(values):6.3f} s  ({len(values)} trials)"
    )


async def run(dsn: str, trials: int, ttl: float) -> None:
    stops = [await takeover_after_stop(dsn, n) for n in range(trials)]
    kills = [await takeover_after_kill(dsn, n) for n in range(trials)]
    expiries = [await expiry_seen(dsn, n, ttl) for n in range(trials)]
    print(summary("new leader after a clean stop (baseline)", stops), flush=True)
    print(summary("new leader after SIGKILL of the leader", kills), flush=True)
    print(summary(f"lease seen expired after death (ttl {ttl:g} s)", expiries))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--ttl", type=float, default=3.0)
    args = parser.parse_args()
    why = unavailable()
    if why is not None:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    # SIGTERM (a `timeout`) ends the run through the finally below, so the PostgreSQL is removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    base = Path(tempfile.mkdtemp(prefix="agentpulse-bench-pg-"))
    base.chmod(0o755)
    server = LocalPostgres(base / "pg")
    try:
        server.start()
        asyncio.run(run(server.dsn, args.trials, args.ttl))
    finally:
        server.remove()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
