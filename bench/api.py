"""The HTTP API at fleet size: a real manager with N agents in global.db (200,000 by default), a live
simulated fleet keeping alive, and the three reads of issue 15 timed while it does.

Two phases in one run, same manager, same fleet: the fleet alone (the baseline ack latency), then the
fleet while this process calls the API as fast as one client can; the figures are the API latencies
(p50/p99/max) against their aims and the ack p99 of both phases, with their ratio (aim: within 20 %).

    .venv/bin/python bench/api.py                                  # 200,000 agents, 2,000 live, 30 s phases
    .venv/bin/python bench/api.py --agents 20000 --live 500 --duration 10   # a quick check
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import random
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agentpulse.wire.keys import KeysFile
from fleet import LOOPBACK, OUT, free_port, percentile, start_manager, stop_process

USER, PASSWORD = "bench", "bench-password"
QUERIES = {
    "summary": ("/agents/summary/status", 5.0),
    "disconnected": ("/agents?status=disconnected&limit=500", 50.0),
    "deep_sorted": ("/agents?limit=500&offset={deep}&sort=-lastKeepAlive", 200.0),
}


def write_home(home: Path, port: int, api_port: int, agents: int, workers: str) -> None:
    import shutil

    if home.exists():
        shutil.rmtree(home)
    (home / "etc").mkdir(parents=True)
    (home / "etc" / "ossec.conf").write_text(
        f"""<ossec_config>
  <remote><connection>secure</connection><port>{port}</port><protocol>tcp</protocol>
    <local_ip>{LOOPBACK}</local_ip><workers>{workers}</workers></remote>
  <nats><enabled>no</enabled></nats>
  <api><port>{api_port}</port><host>{LOOPBACK}</host><https><enabled>no</enabled></https></api>
</ossec_config>
"""
    )
    keys = KeysFile([])
    keys.add_many(f"fleet-{n:06d}" for n in range(1, agents + 1))
    (home / "etc" / "client.keys").write_text(keys.render())
    user = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentpulse",
            "api-user",
            "--home",
            str(home),
            "add",
            USER,
            "--password-stdin",
        ],
        input=PASSWORD + "\n",
        text=True,
        capture_output=True,
    )
    assert user.returncode == 0, user.stderr


def describe_fleet(home: Path, live: int) -> None:
    """Give the stored agents what a real fleet has (OS, version, groups, keep-alive times, statuses)."""
    db = sqlite3.connect(home / "queue" / "db" / "global.db")
    now = int(time.time())
    rng = random.Random(15)
    rows = db.execute("SELECT id FROM agent WHERE id > ?", (live,)).fetchall()
    with db:
        db.executemany(
            "UPDATE agent SET os_name='Ubuntu', os_version='22.04.4 LTS', os_platform='ubuntu', os_arch='x86_64', "
            "version='Wazuh v4.14.7', last_keepalive=?, connection_status=?, status_code=?, disconnection_time=? "
            "WHERE id=?",
            [
                (
                    now - rng.randint(60, 86400 * 7),
                    s,
                    4 if s == "disconnected" else 0,
                    now - 30 if s == "disconnected" else 0,
                    row[0],
                )
                for row in rows
                for s in [rng.choice(("disconnected", "disconnected", "never_connected"))]
            ],
        )
    db.close()


def wait_for_port(port: int, timeout: float = 300) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on {port}")


class Client:
    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection(LOOPBACK, port, timeout=60)
        basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.connection.request(
            "POST", "/security/user/authenticate?raw=true", headers={"Authorization": f"Basic {basic}"}
        )
        self.token = self.connection.getresponse().read().decode()

    def get(self, path: str) -> tuple[float, bytes]:
        started = time.perf_counter()
        self.connection.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
        response = self.connection.getresponse()
        body = response.read()
        assert response.status == 200, body[:300]
        return (time.perf_counter() - started) * 1000, body


def simulate(
    port: int, keys: Path, live: int, interval: float, duration: float, out: Path
) -> dict[str, object]:
    command = [
        sys.executable, "-m", "agentpulse", "simulate", "--manager", f"{LOOPBACK}:{port}", "--agents", str(live),
        "--keys", str(keys), "--interval", str(interval), "--ramp", "5", "--duration", str(duration + 5),
        "--json-out", str(out), "--progress", "never", "--precompute",
    ]  # fmt: skip
    subprocess.run(command, stdout=subprocess.DEVNULL, timeout=duration + 300, check=False)
    result: dict[str, object] = json.loads(out.read_text())
    return result


def api_load(port: int, total: int, stop: threading.Event, results: dict[str, list[float]]) -> None:
    client = Client(port)
    deep = max(0, total - 500)
    while not stop.is_set():
        for name, (path, _) in QUERIES.items():
            took, _ = client.get(path.format(deep=deep))
            results.setdefault(name, []).append(took)
        for _ in range(20):  # the summary is the call integrations poll most
            took, _ = client.get(QUERIES["summary"][0])
            results["summary"].append(took)


def cpu_per_query(home: Path, total: int) -> dict[str, float]:
    """The same reads in this process, on the stopped manager's global.db: CPU ms (median of 5) of the
    store's read plus the item building and JSON, i.e. what a reply costs on an idle core."""
    from agentpulse.api import query
    from agentpulse.api.errors import dumps
    from agentpulse.api.fields import item
    from agentpulse.api.http import Request
    from agentpulse.store.sqlite.reads import SqliteReader

    reader = SqliteReader(home / "queue" / "db" / "global.db", keep_open=True)
    costs = {}
    for name, (path, _) in QUERIES.items():
        if name == "summary":
            continue
        target = path.format(deep=max(0, total - 500))
        pairs = [tuple(p.split("=", 1)) for p in target.split("?", 1)[1].split("&")]
        parsed = query.agents_request(Request("GET", "/agents", pairs, {}, b"", ""), time.time())  # type: ignore[arg-type]
        samples = []
        for _ in range(5):
            started = time.process_time()
            page = reader.agents_page(parsed.query)
            dumps([item(row, parsed.select) for row in page.rows])
            samples.append((time.process_time() - started) * 1000)
        costs[name] = statistics.median(samples)
    return costs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=200_000)
    parser.add_argument("--live", type=int, default=2000, help="simulated agents keeping alive")
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of each phase")
    parser.add_argument("--workers", default="auto", help="<remote><workers>: auto (the default) or 1")
    args = parser.parse_args()

    home = OUT / "api"
    port, api_port = free_port(), free_port()
    print(
        f"agents {args.agents:,}, live {args.live:,} every {args.interval:g} s, phases of {args.duration:g} s, "
        f"workers {args.workers}, load average {Path('/proc/loadavg').read_text().split()[0]}"
    )
    started = time.monotonic()
    write_home(home, port, api_port, args.agents, args.workers)
    manager = start_manager(home, port)
    stop_process(manager)
    describe_fleet(home, args.live)
    (home / "var" / "run" / "agentpulse-remoted.state").unlink(missing_ok=True)  # the first run's
    manager = start_manager(home, port)
    wait_for_port(api_port)
    print(f"home ready in {time.monotonic() - started:.0f} s")
    try:
        keys = home / "etc" / "client.keys"
        baseline = simulate(port, keys, args.live, args.interval, args.duration, home / "baseline.json")
        results: dict[str, list[float]] = {}
        stop = threading.Event()
        total = Client(api_port).get("/agents?limit=1")[1]
        count = json.loads(total)["data"]["total_affected_items"]
        loader = threading.Thread(target=api_load, args=(api_port, count, stop, results))
        loader.start()
        loaded = simulate(port, keys, args.live, args.interval, args.duration, home / "loaded.json")
        stop.set()
        loader.join()
    finally:
        stop_process(manager)

    print(f"\n{'query':<14} {'calls':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'aim p99':>8}")
    for name, (path, aim) in QUERIES.items():
        values = results.get(name, [])
        p50, p99 = statistics.median(values), percentile(values, 0.99)
        flag = "ok" if p99 < aim else "MISSED"
        print(
            f"{name:<14} {len(values):>6} {p50:>8.2f} {p99:>8.2f} {max(values):>8.2f} {aim:>7.0f}  {flag}  {path}"
        )
    base = baseline["steady_ack_latency_ms"]["p99"]  # type: ignore[index]
    under = loaded["steady_ack_latency_ms"]["p99"]  # type: ignore[index]
    print(f"\nack p99 without API load {base} ms, with {under} ms: ratio {under / base:.2f} (aim <= 1.20)")
    print(f"keep-alives/s acked: {baseline['keepalives_per_s']} without, {loaded['keepalives_per_s']} with")
    print(f"errors: {baseline['errors']} without, {loaded['errors']} with")
    for name, cost in cpu_per_query(home, count).items():
        print(
            f"CPU of one {name} reply in-process (median of 5): {cost:.1f} ms (aim {QUERIES[name][1]:.0f} ms)"
        )
    print(f"load average at the end {Path('/proc/loadavg').read_text().split()[0]} (2 cores, shared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
