"""`make cluster-demo`: a whole cluster on one machine, for someone who wants to see it work.

Under `var/cluster-demo/`: a throwaway PostgreSQL (initdb/pg_ctl on a free port), a 3-server NATS cluster
(R3 stream and bucket), three agentpulse nodes (node-1..3, one client.keys) and a simulated fleet listing
the three nodes as its servers. The nodes share the PostgreSQL (`<database><backend>postgresql`): their
leases, the leader, every agent's status and history, the outbox the leader relays. Ctrl-C
stops everything in reverse order and removes the PostgreSQL; the danger is leaving processes behind, so
every child is started here and stopped here, with a bounded wait.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Final

import psycopg

from agentpulse.cluster.localnats import LOOPBACK, LocalNatsCluster, LocalNatsError, free_ports
from agentpulse.cluster.localpg import LocalPostgres, LocalPostgresError, unavailable
from agentpulse.keysfile import write_keys_file
from agentpulse.paths import Home
from agentpulse.wire.keys import KeysFile

NODES: Final = 3
DATABASE: Final = "agentpulse"
STOP_TIMEOUT: Final = 20.0
START_TIMEOUT: Final = 30.0

NODE_CONF: Final = """<ossec_config>
  <remote>
    <connection>secure</connection>
    <port>{port}</port>
    <protocol>tcp</protocol>
    <local_ip>{loopback}</local_ip>
    <keyupdate_interval>1</keyupdate_interval>
    <workers>1</workers>
  </remote>
  <global>
    <node_name>{node}</node_name>
    <agents_disconnection_time>1m</agents_disconnection_time>
  </global>
  <nats>
    <enabled>yes</enabled>
    <url>{nats}</url>
    <replicas>3</replicas>
  </nats>
  <database>
    <backend>postgresql</backend>
    <dsn>{dsn}</dsn>
  </database>
</ossec_config>
"""


class Demo:
    def __init__(self, root: Path, agents: int) -> None:
        self.root = root
        self.agents = agents
        self.postgres = LocalPostgres(root / "postgresql")
        self.nats = LocalNatsCluster(root / "nats", 3)
        self.ports = free_ports(NODES)
        self.homes = [Home(root / f"node-{n + 1}") for n in range(NODES)]
        self.nodes: list[subprocess.Popen[bytes]] = []
        self.fleet: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)  # a demo left by a kill -9: start clean
        self.root.mkdir(parents=True)
        self.root.chmod(0o755)  # whatever the umask: the postgres user walks through it to its folder
        print(f"PostgreSQL: initdb and start under {self.postgres.root} ...", flush=True)
        self.postgres.start()
        with psycopg.connect(self.postgres.dsn, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")
        print(f"NATS: three routed servers under {self.nats.root} ...", flush=True)
        self.nats.start()
        keys = KeysFile([])
        keys.add_many(f"demo-{n + 1:05d}" for n in range(self.agents))
        for index, home in enumerate(self.homes):
            home.create_layout()
            text = NODE_CONF.format(
                port=self.ports[index],
                loopback=LOOPBACK,
                node=f"node-{index + 1}",
                nats=self.nats.url,
                dsn=self.postgres.dsn_for(DATABASE),
            )
            home.ossec_conf.write_text(text)
            write_keys_file(home.client_keys, keys)
            self.nodes.append(self._spawn(["start", "--home", str(home.root)], home.root / "manager.out"))
        for index, home in enumerate(self.homes):
            self._wait_listening(home, self.ports[index])
        servers = [f"--manager={LOOPBACK}:{port}" for port in self.ports]
        self.fleet = self._spawn(
            [
                "simulate",
                *servers,
                "--spread",
                "--agents",
                str(self.agents),
                "--keys",
                str(self.homes[0].client_keys),
                "--interval",
                "10",
                "--duration",
                "86400",
                "--progress",
                "never",
            ],
            self.root / "fleet.out",
        )

    def _spawn(self, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as output:
            return subprocess.Popen(
                [sys.executable, "-m", "agentpulse", *args],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the demo alone; it stops them in order
            )

    def _wait_listening(self, home: Home, port: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            state = home.remoted_state
            if state.exists() and f":{port}/" in state.read_text():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{home.root.name} did not start: see {home.root / 'manager.out'}")

    def explain(self) -> None:
        dsn = self.postgres.dsn_for(DATABASE)
        print()
        print("Running:")
        print(f"  PostgreSQL   {dsn}")
        print(f"  NATS         {self.nats.url}")
        for index, home in enumerate(self.homes):
            print(f"  node-{index + 1}       {LOOPBACK}:{self.ports[index]}  home {home.root}")
        print(
            f"  fleet        {self.agents} simulated agents listing the three nodes (log {self.root}/fleet.out)"
        )
        print()
        print("Try, in another terminal:")
        print(f"  .venv/bin/agentpulse cluster status --home {self.homes[0].root}")
        print(f"  .venv/bin/agentpulse cluster status --home {self.homes[0].root} --dsn {dsn}")
        print(f"  .venv/bin/agentpulse watch --url {self.nats.urls[0]}")
        print(f"  kill -9 {self.nodes[1].pid}    # node-2: its agents move to node-3, then node-1")
        print(
            f"  kill -9 {self.nats.processes[0].pid if self.nats.processes[0] else '?'}    # NATS n1: events go on"
        )
        print()
        print("The three nodes share the PostgreSQL: leases, the leader, every agent's status and history;")
        print("see docs/cluster.md. Ctrl-C stops everything.")

    def stop(self) -> None:
        children = [self.fleet, *reversed(self.nodes)]
        for child in children:
            if child is not None and child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            if child is None:
                continue
            try:
                child.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.nats.stop()
        self.postgres.remove()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cluster-demo", description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("var/cluster-demo"))
    parser.add_argument("--agents", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=0, help="stop after this long (0: at Ctrl-C)")
    args = parser.parse_args(argv)
    why = unavailable()
    if why is not None:
        print(f"cluster-demo: cannot run a throwaway PostgreSQL here: {why}", file=sys.stderr)
        return 2
    demo = Demo(args.root.resolve(), args.agents)

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        demo.start()
        demo.explain()
        deadline = time.monotonic() + args.seconds if args.seconds else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nStopping ...", flush=True)
    except (LocalPostgresError, LocalNatsError, RuntimeError, OSError, psycopg.Error) as error:
        print(f"cluster-demo: {error}", file=sys.stderr)
        return 1
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            demo.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
