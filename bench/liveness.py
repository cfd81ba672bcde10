"""How fast a dead agent is seen, and what watching costs.

Part 1 runs a real manager with manager keep-alive interval I, timeout T and connection grace G, connects
N agents that send a keep-alive every second, then kills some of them two ways: silently (the socket stays
open and nothing more is sent, like a frozen or unplugged host) and by dropping the socket (like a killed
process). For each it reads the disconnection time from agent_status_history and prints the delay
distribution: from the agent's last message for silent deaths (ideal: T), from the drop for socket drops
(ideal: G). Part 2 measures the keep-alive scheduler alone: CPU seconds per second of wall time for 10,000
connections that each talk every 20 s, the heap catching up lazily.

    .venv/bin/python bench/liveness.py [--agents 600] [--interval 2] [--timeout 5] [--grace 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fleet
from agentpulse.agent.connection import AgentCodec, AgentConnection
from agentpulse.config import ManagerKeepalive
from agentpulse.remoted.scheduler import KeepaliveScheduler
from agentpulse.wire import control
from agentpulse.wire.keys import AgentKey, KeysFile

KEEPALIVE = control.build_keepalive(
    "Linux |bench |6.1.0 |#1 SMP |x86_64 [Debian GNU/Linux|debian: 12 (bookworm)] - Wazuh v4.14.7",
    merged_sum="x" * 32,
)


def write_home(home: Path, port: int, agents: int, interval: float, timeout: float, grace: float) -> KeysFile:
    fleet.write_home(home, port, 1, "none", 20, 0)
    (home / "etc" / "ossec.conf").write_text(
        f"""<ossec_config>
  <remote>
    <connection>secure</connection><port>{port}</port><local_ip>{fleet.LOOPBACK}</local_ip>
    <connection_grace>{grace}</connection_grace>
    <manager_keepalive><enabled>yes</enabled><interval>{interval}</interval><timeout>{timeout}</timeout>
    </manager_keepalive>
  </remote>
  <nats><enabled>no</enabled></nats>
  <database><flush_interval>0.2</flush_interval></database>
</ossec_config>
"""
    )
    keys = KeysFile([])
    keys.add_many(f"live-{n:05d}" for n in range(1, agents + 1))
    (home / "etc" / "client.keys").write_text(keys.render())
    return keys


@dataclass
class Agent:
    key: AgentKey
    connection: AgentConnection
    last_sent: float = 0.0  # wall clock
    talking: bool = True


async def connect(key: AgentKey, port: int) -> Agent:
    connection = await AgentConnection.open(AgentCodec(key), fleet.LOOPBACK, port)
    connection.send(control.build_startup("v4.14.7"))
    await connection.receive(timeout=30)
    agent = Agent(key, connection)
    send(agent)
    return agent


def send(agent: Agent) -> None:
    agent.connection.send(KEEPALIVE)
    agent.last_sent = time.time()


async def talk(agents: list[Agent], until: float) -> None:
    """Every talking agent sends a keep-alive each second, and answers what the manager sends."""
    while time.monotonic() < until:
        for agent in agents:
            if agent.talking and not agent.connection.closed.is_set():
                while not agent.connection.received.empty():
                    message = agent.connection.received.get_nowait()
                    if isinstance(message, control.Request):
                        agent.connection.send(control.build_request_reply(message.counter, '{"error":0}'))
                send(agent)
        await asyncio.sleep(1.0)


def disconnections(home: Path) -> dict[int, tuple[float, int]]:
    db = sqlite3.connect(f"file:{home / 'queue' / 'db' / 'global.db'}?mode=ro", uri=True, timeout=5)
    try:
        rows = db.execute(
            "SELECT agent_id, at, status_code FROM agent_status_history WHERE to_status = 'disconnected'"
        ).fetchall()
    finally:
        db.close()
    return {agent_id: (at, code) for agent_id, at, code in rows}


def summary(delays: list[float]) -> dict[str, float]:
    ordered = sorted(delays)
    return {
        "count": len(ordered),
        "p50": round(fleet.percentile(ordered, 0.5), 3),
        "p99": round(fleet.percentile(ordered, 0.99), 3),
        "max": round(ordered[-1], 3) if ordered else float("nan"),
    }


async def detection(args: argparse.Namespace) -> dict[str, object]:
    home = fleet.OUT / "liveness-home"
    port = fleet.free_port()
    keys = write_home(home, port, args.agents, args.interval, args.timeout, args.grace)
    manager = fleet.start_manager(home, port)
    try:
        agents = [await connect(key, port) for key in keys.active()]
        random.shuffle(agents)
        silent = agents[: args.agents // 3]
        dropped = agents[args.agents // 3 : 2 * args.agents // 3]
        healthy = agents[2 * args.agents // 3 :]
        talker = asyncio.create_task(talk(agents, time.monotonic() + args.timeout * 3 + 10))
        await asyncio.sleep(3)
        for agent in silent:
            agent.talking = False  # socket open, nothing more sent or read
        drop_times: dict[int, float] = {}
        for agent in dropped:
            agent.talking = False
            agent.connection.abort()
            drop_times[agent.key.number] = time.time()
        await asyncio.sleep(max(args.timeout, args.grace) + 4)
        talker.cancel()
        await asyncio.gather(talker, return_exceptions=True)
        time.sleep(0.5)  # one more flush of the store
        seen = disconnections(home)
        silent_delays = [seen[a.key.number][0] - a.last_sent for a in silent if a.key.number in seen]
        drop_delays = [
            seen[a.key.number][0] - drop_times[a.key.number] for a in dropped if a.key.number in seen
        ]
        false = [a.key.id for a in healthy if a.key.number in seen]
        missed = [a.key.id for a in silent + dropped if a.key.number not in seen]
        codes = {seen[a.key.number][1] for a in silent if a.key.number in seen}
        codes |= {seen[a.key.number][1] for a in dropped if a.key.number in seen}
        for agent in healthy:
            agent.connection.close()
        return {
            "agents": args.agents,
            "manager_keepalive": {"interval": args.interval, "timeout": args.timeout},
            "connection_grace": args.grace,
            "silent_death_delay_s": summary(silent_delays),
            "socket_drop_delay_s": summary(drop_delays),
            "codes_seen": sorted(codes),
            "false_disconnections": len(false),
            "missed": len(missed),
        }
    finally:
        fleet.stop_process(manager)


@dataclass
class _Session:
    """What the scheduler reads of a connection; part 2 needs no sockets."""

    last_received: float
    probed_at: float = -1.0
    closed: bool = False
    peer_ip: str = "127.0.0.1"


class _Remoted:
    def __init__(self) -> None:
        self.on_session_opened: list[object] = []


def scheduler_cost(connections: int, talk_every: float, simulated: float, tick: float = 0.2) -> float:
    """CPU seconds the scheduler spends per wall second for `connections` that each talk every talk_every s."""
    scheduler = KeepaliveScheduler(_Remoted(), ManagerKeepalive(True, 60.0, 180.0), tick)  # type: ignore[arg-type]
    sessions = [_Session(random.uniform(0, talk_every)) for _ in range(connections)]
    for session in sessions:
        scheduler.track(session)  # type: ignore[arg-type]
    now = 0.0
    cpu = 0.0
    while now < simulated:
        now += tick
        for session in sessions[int(now / tick) % 100 :: 100]:  # each talks about every talk_every s
            session.last_received = now
        start = time.process_time()
        scheduler.check(now)
        cpu += time.process_time() - start
    return cpu / simulated


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=600)
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--grace", type=float, default=2.0)
    args = parser.parse_args()
    fleet.OUT.mkdir(exist_ok=True)
    result = asyncio.run(detection(args))
    result["scheduler_cpu_s_per_s_per_10k"] = round(scheduler_cost(10_000, 20.0, 600.0), 6)
    result["scheduler_cpu_s_per_s_per_100k"] = round(scheduler_cost(100_000, 20.0, 300.0), 6)
    print(json.dumps(result, indent=2))
    return 1 if result["false_disconnections"] or result["missed"] else 0


if __name__ == "__main__":
    sys.exit(main())
