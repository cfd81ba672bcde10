"""`StreamWatch` on a real nats-server: a stream that exists is read back with its replicas and messages,
one that does not is said so (and both written for `agentpulse status`), nothing is read while the connection is down, and a change between healthy
and degraded is one log line each way."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from agentpulse.events.publisher import NatsLink
from agentpulse.events.streamwatch import StreamWatch
from agentpulse.jetstream import StreamHealth
from tests.events.natsserver import NatsServer


def test_streams_are_read_back_or_said_missing(nats_server: NatsServer, tmp_path: Path) -> None:
    state = tmp_path / "agentpulse-streams.json"

    async def scenario() -> None:
        nc = NATS()
        await nc.connect([nats_server.url], connect_timeout=5)
        try:
            link = NatsLink(nc)
            watch = StreamWatch(
                link, ["AGENT_STATUS", "AGENT_EVENTS", "AGENT_STATUS"], interval=0.1, state_path=state
            )
            assert watch.streams == ("AGENT_STATUS", "AGENT_EVENTS")  # each once
            await watch.check()  # no JetStream context yet: the link is not up, nothing is read
            assert watch.report() == {
                "AGENT_STATUS": {"error": "not read yet"},
                "AGENT_EVENTS": {"error": "not read yet"},
            }
            link.js = nc.jetstream()
            await link.js.add_stream(name="AGENT_STATUS", subjects=["agent.status.>"])
            for n in range(3):
                await link.js.publish(f"agent.status.00{n}", b"{}")
            await watch.check()
            report = watch.report()
            status = report["AGENT_STATUS"]
            assert isinstance(status, dict)
            assert (status["replicas"], status["current"], status["degraded"], status["messages"]) == (
                1,
                1,
                False,
                3,
            )
            assert report["AGENT_EVENTS"] == {"error": "does not exist (it is created at the first publish)"}
            assert watch.health["AGENT_STATUS"].replicas == 1
            assert watch.readable() == {"AGENT_STATUS": True, "AGENT_EVENTS": False}
            written = json.loads(state.read_text())  # for `agentpulse status`: the same report
            assert written["streams"] == report and abs(written["updated"] - time.time()) < 30
            # The run loop reads again on its own, and ends when told to.
            await link.js.publish("agent.status.009", b"{}")
            task = asyncio.create_task(watch.run())
            for _ in range(50):
                await asyncio.sleep(0.05)
                if watch.health["AGENT_STATUS"].messages == 4:
                    break
            assert watch.health["AGENT_STATUS"].messages == 4
            watch.stopped = True
            await asyncio.wait_for(task, 2.0)
        finally:
            await nc.close()

    asyncio.run(scenario())


def test_a_change_between_healthy_and_degraded_is_said_once_each_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = StreamWatch(NatsLink(NATS()), ["AGENT_STATUS"])
    healthy = StreamHealth("AGENT_STATUS", 3, "n1", {"n1": True, "n2": True, "n3": True}, 5)
    degraded = StreamHealth("AGENT_STATUS", 3, "n1", {"n1": True, "n2": True, "n3": False}, 6)
    with caplog.at_level(logging.INFO, logger="agentpulse.events.streamwatch"):
        watch._known(healthy)  # healthy from the first read: nothing to say
        assert caplog.messages == []
        for _ in range(3):
            watch._known(degraded)
        watch._known(healthy)
        watch._known(healthy)
        watch._unknown("AGENT_STATUS", "cannot be read: nats: timeout")  # no leader answered
        watch._unknown("AGENT_STATUS", "cannot be read: nats: timeout")
        assert watch.readable() == {"AGENT_STATUS": False}
        watch._known(healthy)
    assert caplog.messages == [
        "JetStream stream AGENT_STATUS is degraded: 2 of 3 replicas current, leader n1, behind or offline: n3; "
        "writes go on, but another server lost may stop them",
        "JetStream stream AGENT_STATUS: all 3 replicas current again (leader n1)",
        "JetStream stream AGENT_STATUS cannot be read: nats: timeout; it was read before (no leader answering, or "
        "removed)",
        "JetStream stream AGENT_STATUS: all 3 replicas current again (leader n1)",
    ]
    assert watch.report()["AGENT_STATUS"] == {
        "replicas": 3,
        "current": 3,
        "degraded": False,
        "leader": "n1",
        "peers": {"n1": True, "n2": True, "n3": True},
        "messages": 5,
    }
