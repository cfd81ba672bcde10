"""Enrolment throughput: a real manager enrolling agents on its TLS port, with the certificate it made.

Two measures, each against a fresh manager (own home under bench/out/, free loopback ports, SQLite, no
NATS unless --nats embedded):

- `--enrolments N --clients C`: C clients (over `--client-processes`, 2 by default), each enrolling one new
  agent after another over its own TLS connection, until N are enrolled. Prints enrolments/s, the manager's CPU per enrolment (all
  its processes), the clients' CPU per enrolment (their TLS is not free either: both share the
  machine), latency p50/p99, and checks client.keys holds N distinct ids.
- `--simulate N`: `agentpulse simulate --enrol --agents N`, timed from its start until global.db shows N
  agents active (the aim: 10,000 in under 60 s).

The per-address limits are lifted (`<source_rate>0`) so the figures are the service's, not the limit's;
`--source-rate 200` measures with the default.

    .venv/bin/python bench/enrol.py --enrolments 3000 --clients 32
    .venv/bin/python bench/enrol.py --simulate 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import ssl
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agentpulse.wire import enrolment
from agentpulse.wire.keys import KeysFile
from fleet import (
    LOOPBACK,
    OUT,
    cpu_seconds_and_rss,
    free_port,
    percentile,
    process_tree,
    start_manager,
    stop_process,
)


def write_home(
    home: Path,
    port: int,
    auth_port: int,
    workers: int,
    nats: str,
    password: str | None,
    source_rate: int = 0,
) -> None:
    if home.exists():
        shutil.rmtree(home)
    (home / "etc").mkdir(parents=True)
    nats_xml = (
        "<nats><enabled>yes</enabled></nats>" if nats == "embedded" else "<nats><enabled>no</enabled></nats>"
    )
    use_password = "yes" if password else "no"
    if password:
        (home / "etc" / "authd.pass").write_text(password + "\n")
    (home / "etc" / "ossec.conf").write_text(
        f"""<ossec_config>
  <remote>
    <connection>secure</connection><port>{port}</port><protocol>tcp</protocol><local_ip>{LOOPBACK}</local_ip>
    <workers>{workers}</workers><connection_grace>60</connection_grace>
  </remote>
  <auth>
    <port>{auth_port}</port><local_ip>{LOOPBACK}</local_ip><use_password>{use_password}</use_password>
    <purge>yes</purge><source_rate>{source_rate}</source_rate><max_connections>4096</max_connections>
  </auth>
  {nats_xml}
</ossec_config>
"""
    )


def client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def enrol_many(
    total: int, clients: int, auth_port: int, password: str | None, prefix: str = "bench"
) -> list[float]:
    from agentpulse.agent.enrol import request_key

    context = client_context()
    latencies: list[float] = []
    next_index = 0

    async def client() -> None:
        nonlocal next_index
        while next_index < total:
            index = next_index
            next_index += 1
            request = enrolment.build_request(f"{prefix}-{index:06d}", password=password, version="v4.14.7")
            began = time.perf_counter()
            await request_key(LOOPBACK, auth_port, request, context)
            latencies.append(time.perf_counter() - began)

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies


def _client_process(job: tuple[int, int, int, str | None, str]) -> tuple[list[float], float]:
    """One load-generator process: (latencies, its CPU seconds)."""
    import uvloop

    total, clients, auth_port, password, prefix = job
    began = time.process_time()
    latencies = uvloop.run(enrol_many(total, clients, auth_port, password, prefix))
    return latencies, time.process_time() - began


def measure_enrolments(args: argparse.Namespace) -> dict[str, object]:
    import multiprocessing

    home = OUT / "enrol"
    port, auth_port = free_port(), free_port()
    write_home(home, port, auth_port, args.workers, args.nats, args.password, args.source_rate)
    manager = start_manager(home, port)
    processes = args.client_processes
    jobs = [
        (
            args.enrolments // processes,
            max(1, args.clients // processes),
            auth_port,
            args.password,
            f"bench{n}",
        )
        for n in range(processes)
    ]
    try:
        time.sleep(1.0)  # the certificate is made and the port open before remoted listens
        _client_process((20, 4, auth_port, args.password, "warm"))  # TLS contexts, imports, first writes
        pids = process_tree(manager.pid)
        cpu_before = cpu_seconds_and_rss(pids)[0]
        load = os.getloadavg()
        began = time.monotonic()
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            results = pool.map(_client_process, jobs)
        elapsed = time.monotonic() - began
        manager_cpu = cpu_seconds_and_rss(process_tree(manager.pid))[0] - cpu_before
    finally:
        stop_process(manager)
    done = sum(job[0] for job in jobs)
    latencies = [latency for result in results for latency in result[0]]
    client_cpu = sum(result[1] for result in results)
    keys = KeysFile.parse((home / "etc" / "client.keys").read_text())
    ids = {key.id for key in keys.active()}
    return {
        "measure": "enrolments",
        "enrolments": done,
        "clients": args.clients,
        "client_processes": processes,
        "workers": args.workers,
        "nats": args.nats,
        "password": bool(args.password),
        "seconds": round(elapsed, 2),
        "enrolments_per_s": round(done / elapsed, 1),
        "manager_cpu_ms_per_enrolment": round(manager_cpu / done * 1000, 3),
        "manager_cpu_percent": round(manager_cpu / elapsed * 100, 1),
        "client_cpu_ms_per_enrolment": round(client_cpu / done * 1000, 3),
        "latency_ms_p50": round(percentile(latencies, 0.5) * 1000, 1),
        "latency_ms_p99": round(percentile(latencies, 0.99) * 1000, 1),
        "client_keys_ids": len(ids),
        "all_distinct": len(ids) == done + 20,
        "load_before": load,
    }


def active_count(home: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{home / 'queue' / 'db' / 'global.db'}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return 0
    try:
        return int(db.execute("SELECT COUNT(*) FROM agent WHERE connection_status = 'active'").fetchone()[0])
    except sqlite3.Error:
        return 0
    finally:
        db.close()


def measure_simulate(args: argparse.Namespace) -> dict[str, object]:
    home = OUT / "enrol-simulate"
    port, auth_port = free_port(), free_port()
    write_home(home, port, auth_port, args.workers, args.nats, args.password, args.source_rate)
    manager = start_manager(home, port)
    command = [
        str(Path(sys.executable).parent / "agentpulse"),
        "simulate",
        "--manager",
        f"{LOOPBACK}:{port}",
        "--agents",
        str(args.simulate),
        "--enrol",
        "--enrol-port",
        str(auth_port),
        "--enrol-concurrency",
        str(args.clients),
        "--interval",
        "20",
        "--ramp",
        "5",
        "--duration",
        "120",
        "--progress",
        "never",
        *(["--password", args.password] if args.password else []),
    ]
    load = os.getloadavg()
    began = time.monotonic()
    simulator = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    all_active = None
    try:
        while time.monotonic() - began < args.timeout:
            if active_count(home) >= args.simulate:
                all_active = time.monotonic() - began
                break
            if simulator.poll() is not None:
                break
            time.sleep(0.25)
        simulator.send_signal(2)
        stdout, stderr = simulator.communicate(timeout=120)
    finally:
        if simulator.poll() is None:
            simulator.kill()
            simulator.communicate()
        stop_process(manager)
    summary = json.loads(stdout) if stdout.strip().startswith("{") else {"stderr": stderr[-2000:]}
    return {
        "measure": "simulate",
        "agents": args.simulate,
        "workers": args.workers,
        "enrol_concurrency": args.clients,
        "source_rate": args.source_rate,
        "seconds_to_all_active": None if all_active is None else round(all_active, 1),
        "enrolment": summary.get("enrolment"),
        "connected": summary.get("connected"),
        "errors": summary.get("errors"),
        "load_before": load,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--enrolments", type=int, default=3000)
    parser.add_argument(
        "--clients", type=int, default=32, help="concurrent clients (or enrolments in flight)"
    )
    parser.add_argument("--simulate", type=int, metavar="N", help="time simulate --enrol to N agents active")
    parser.add_argument("--client-processes", type=int, default=2, help="load-generator processes")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--nats", choices=("none", "embedded"), default="none")
    parser.add_argument("--password", help="enable <use_password> with this password")
    parser.add_argument(
        "--source-rate", type=int, default=0, help="<auth><source_rate> (default 0: no per-address limit)"
    )
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    result = measure_simulate(args) if args.simulate else measure_enrolments(args)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
