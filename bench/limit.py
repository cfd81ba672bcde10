"""What this machine's CPU allows for one keep-alive, without a server: the ceiling fleet.py compares to.

One loop, one core, the same work the manager does per message minus I/O, storage and events: find the
agent by its `!id!` prefix, decrypt and verify the keep-alive, parse it, and encrypt the ack.

    .venv/bin/python bench/limit.py [--agents 1000] [--seconds 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time

from agentpulse.wire import control
from agentpulse.wire.keys import KeysFile
from agentpulse.wire.secure import AgentCipher, CipherKind, split_header

UNAME = (
    "Linux |bench-host |6.1.0-18-amd64 |#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01) |x86_64 "
    "[Debian GNU/Linux|debian: 12 (bookworm)] - Wazuh v4.14.7"
)


def keepalive(index: int) -> bytes:
    return control.build_keepalive(
        UNAME,
        merged_sum="4a8724b20dee0124ff9656783c490c4e",
        labels=(('"env"', "prod"),),
        agent_ip=f"10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}",
    )


def measure(agents: int, seconds: float) -> dict[str, float]:
    keys = KeysFile([])
    entries = keys.add_many(f"bench-{n:06d}" for n in range(agents))
    ciphers = {entry.number: AgentCipher.for_key(entry.id, entry.name, entry.key) for entry in entries}
    messages = [
        ciphers[entry.number].seal(
            keepalive(entry.number),
            cipher=CipherKind.AES,
            rand=random.getrandbits(16),
            global_counter=0,
            local_counter=1,
            agent_id=entry.id,
        )
        for entry in entries
    ]
    count = 0
    global_counter, local_counter = 0, 0
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for payload in messages:
            envelope = split_header(payload)
            assert envelope.agent_id is not None
            cipher = ciphers[int(envelope.agent_id)]
            message = cipher.open(envelope)
            parsed = control.parse_from_agent(message.payload)
            assert isinstance(parsed, control.Keepalive)
            local_counter += 1
            cipher.seal(
                control.ACK,
                cipher=envelope.cipher,
                rand=random.getrandbits(16),
                global_counter=global_counter,
                local_counter=local_counter % 9997 + 1,
            )
        count += len(messages)
    elapsed = time.perf_counter() - start
    return {
        "keepalives_per_s": count / elapsed,
        "us_per_keepalive": elapsed / count * 1e6,
        "message_bytes": sum(map(len, messages)) / len(messages),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = measure(args.agents, args.seconds)
    result["python"] = platform.python_version()  # type: ignore[assignment]
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"limit (one core, decrypt+verify+parse+encrypt ack, no I/O): {result['keepalives_per_s']:,.0f} "
            f"keep-alives/s, {result['us_per_keepalive']:.2f} us each, {result['message_bytes']:.0f}-byte messages"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
