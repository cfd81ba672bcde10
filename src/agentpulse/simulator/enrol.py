"""`simulate --enrol`: the fleet asks the manager for its keys first (port 1515), as real agents do, so a
run needs no keys made beforehand. Names are `sim-<run>-NNNNNN`, the run a random tag, so a second run
against the same manager enrols new agents instead of colliding with the first run's names.

Each agent enrols from the source address it will then connect from. At most `concurrency` enrolments
are in flight; a connection the manager refused or dropped (its per-address limits, a full pool) is tried
again after a short, growing pause; an `ERROR:` reply ends the run, since trying again cannot change it.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from agentpulse.agent import enrol
from agentpulse.agent.config import EnrollmentConfig
from agentpulse.agent.sysinfo import AGENT_VERSION
from agentpulse.simulator.plan import SimulatorError
from agentpulse.wire import enrolment
from agentpulse.wire.keys import AgentKey

CONCURRENCY: Final = 128
ATTEMPTS: Final = 30
PAUSE: Final = 0.1  # after the Nth failed attempt, about N x PAUSE s (capped), with jitter
PAUSE_MAX: Final = 2.0
TIMEOUT: Final = 30.0


@dataclass(slots=True)
class EnrolmentReport:
    enrolled: int = 0
    retries: int = 0
    seconds: float = 0.0
    retry_kinds: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, object]:
        rate = self.enrolled / self.seconds if self.seconds > 0 else 0.0
        return {
            "enrolled": self.enrolled,
            "seconds": round(self.seconds, 3),
            "per_s": round(rate, 1),
            "retries": self.retries,
            "retry_kinds": dict(sorted(self.retry_kinds.items())),
        }


async def enrol_fleet(
    host: str,
    port: int,
    count: int,
    sources: Sequence[str],
    *,
    password: str | None = None,
    concurrency: int = CONCURRENCY,
    report: EnrolmentReport | None = None,
) -> list[AgentKey]:
    """`count` new agents' keys, in index order; SimulatorError when one cannot be had."""
    report = report if report is not None else EnrolmentReport()
    context = enrol.client_context(EnrollmentConfig(), Path("."))  # no certificate files to find
    tag = secrets.token_hex(3)
    gate = asyncio.Semaphore(concurrency)
    keys: list[AgentKey | None] = [None] * count
    started = time.monotonic()

    async def one(index: int) -> None:
        name = f"sim-{tag}-{index + 1:06d}"
        request = enrolment.build_request(name, password=password, version=AGENT_VERSION)
        source = sources[index % len(sources)]
        for attempt in range(1, ATTEMPTS + 1):
            async with gate:
                try:
                    keys[index] = await enrol.request_key(
                        host, port, request, context, timeout=TIMEOUT, local_address=source
                    )
                    report.enrolled += 1
                    return
                except enrolment.EnrolmentError as error:
                    raise SimulatorError(f"enrolment of {name} refused: {error.response}") from None
                except (OSError, ssl.SSLError, TimeoutError) as error:
                    kind = type(error).__name__
                    report.retries += 1
                    report.retry_kinds[kind] = report.retry_kinds.get(kind, 0) + 1
            pause = min(PAUSE_MAX, PAUSE * attempt)
            await asyncio.sleep(pause * random.uniform(0.5, 1.5))
        raise SimulatorError(f"enrolment of {name} at {host}:{port} failed {ATTEMPTS} times")

    tasks = [asyncio.create_task(one(index)) for index in range(count)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        report.seconds = time.monotonic() - started
    return [key for key in keys if key is not None]
