"""Liveness with real agent processes: a frozen agent is probed then disconnected (code 4) within the
timeout, a silent UDP agent is swept within agents_disconnection_time, and both come back."""

from __future__ import annotations

import re
import signal
import time

from tests.e2e.harness import AgentFactory, ManagerProcess, ManagerSettings, wait_until


def test_frozen_agent_is_probed_then_disconnected_with_code_4_and_returns_after_sigcont(
    manager: ManagerProcess, agent_process: AgentFactory
) -> None:
    manager.settings = ManagerSettings(keepalive_enabled=True, keepalive_interval=1, keepalive_timeout=3)
    (key,) = manager.add_agents(1)
    manager.start()
    agent = agent_process(key, notify_time=0.5, time_reconnect=30)
    agent.start()
    manager.wait_for(key.number, "active", 0)
    assert agent.process is not None
    agent.process.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        manager.wait_for(key.number, "disconnected", 4, timeout=manager.settings.keepalive_timeout + 3)
        took = time.monotonic() - stopped
        # Not before the timeout (less the last keep-alive's age), and after it only the probe's second,
        # the flush and the polling, with room for a loaded machine.
        assert manager.settings.keepalive_timeout - 0.5 <= took <= manager.settings.keepalive_timeout + 2.5
        output = manager.output()
        assert f"Agent {key.id} silent for " in output and "probed with getstate" in output
        # 3.x s, or a little more when the loop lagged: the probe's deadline is stretched by the measured
        # lag (docs/overload.md), the bound above still holds
        assert re.search(rf"Agent {key.id} silent for [34]\.\d s: disconnected \(code 4\)", output)
    finally:
        agent.process.send_signal(signal.SIGCONT)
    wait_until(lambda: manager.history(key.number)[-1][1] == "active", "the agent active again", timeout=15)
    assert [change[1:] for change in manager.history(key.number)] == [
        ("pending", 0),
        ("active", 0),
        ("disconnected", 4),
        ("pending", 0),
        ("active", 0),
    ]


def test_silent_udp_agent_is_swept_within_the_disconnection_time(
    manager: ManagerProcess, agent_process: AgentFactory
) -> None:
    manager.settings = ManagerSettings(protocols="tcp,udp", disconnection_time="2s")
    (key,) = manager.add_agents(1)
    manager.start()
    agent = agent_process(key, protocol="udp", notify_time=0.5)
    agent.start()
    manager.wait_for(key.number, "active", 0)
    assert agent.process is not None
    agent.process.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        manager.wait_for(key.number, "disconnected", 4, timeout=6)
        # The sweep runs each second and the flush each second: T - the keep-alive age <= took <= T + 2.5.
        assert 2 - 0.5 <= time.monotonic() - stopped <= 2 + 2.5
    finally:
        agent.process.send_signal(signal.SIGCONT)
    wait_until(lambda: manager.status(key.number) == ("active", 0), "the UDP agent active again", timeout=10)
