"""The replicas of the streams agentpulse writes, on a 3-server NATS cluster with `<replicas>3`: the metrics
show them all current, then one fewer once a server is killed (so do `GET /manager/status` and `agentpulse
status`, and one "degraded" warning names it), and all current again (one line says so) once it is back."""

from __future__ import annotations

import asyncio

from agentpulse.cluster.localnats import LocalNatsCluster
from tests.e2e.api_tools import ADMIN, Api, add_user
from tests.e2e.harness import ManagerProcess, free_port, run_cli, wait_until
from tests.e2e.test_metrics import Scrape, eventually, metrics_section, value
from tests.events.fleet import Agent, nats_settings

STREAMS = ("AGENT_STATUS", "KV_agent_status", "AGENT_EVENTS")  # the KV bucket is a stream too
DETECTED = 60.0  # the watch reads every 10 s; a killed server is seen as offline some seconds later


def current(samples: Scrape, stream: str) -> float:
    return value(samples, "agentpulse_nats_stream_replicas_current", stream=stream)


def test_a_lost_server_shows_as_a_degraded_stream_until_it_is_back(
    nats_cluster: LocalNatsCluster, manager: ManagerProcess
) -> None:
    port = free_port()
    manager.settings = nats_settings(
        nats_cluster.url,
        "<replicas>3</replicas>",
        sections=metrics_section(port),
        api="<https><enabled>no</enabled></https>",
    )
    (key,) = manager.add_agents(1)
    manager.write_config()
    add_user(manager, *ADMIN, "admin")
    manager.start()
    api = Api(manager)
    api.token = api.login(ADMIN)

    async def talk() -> None:
        agent = await Agent.connect(manager, key)
        await agent.startup()
        agent.connection.send(b"1:/var/log/app.log:a line")  # AGENT_EVENTS is made at the first publish
        await agent.keepalive()
        agent.close()

    asyncio.run(talk())

    def all_current(samples: Scrape) -> bool:
        return all(
            ("agentpulse_nats_stream_replicas_current", frozenset({("stream", s)})) in samples
            and current(samples, s) == 3
            for s in STREAMS
        )

    healthy = eventually(port, "both streams with 3 current replicas", all_current, timeout=DETECTED)
    for stream in STREAMS:
        assert value(healthy, "agentpulse_nats_stream_replicas", stream=stream) == 3
    assert value(healthy, "agentpulse_nats_stream_messages", stream="AGENT_STATUS") >= 2  # pending, active
    assert "is degraded" not in manager.output()

    lost = nats_cluster.server_name(2)
    nats_cluster.kill(2)
    degraded = eventually(
        port, "a replica fewer", lambda s: current(s, "AGENT_STATUS") == 2, timeout=DETECTED
    )
    assert value(degraded, "agentpulse_nats_stream_replicas", stream="AGENT_STATUS") == 3
    streams = api.get("/manager/status")["data"]["nats"]["streams"]
    assert set(streams) == set(STREAMS)
    status = streams["AGENT_STATUS"]
    assert (status["replicas"], status["current"], status["degraded"]) == (3, 2, True)
    assert status["peers"][lost] is False and status["leader"] in status["peers"]
    shown = run_cli("agentpulse", "status", home=manager.root)
    assert shown.returncode == 0, shown.stderr
    assert "  AGENT_STATUS: DEGRADED: 2 of 3 replicas current" in shown.stdout
    assert f"behind or offline: {lost}" in shown.stdout
    wait_until(
        lambda: "JetStream stream AGENT_STATUS is degraded: 2 of 3" in manager.output(),
        "the degraded warning",
        timeout=15,
        detail=manager.output,
    )
    warning = next(line for line in manager.output().splitlines() if "AGENT_STATUS is degraded" in line)
    assert lost in warning  # the server behind or offline is named

    nats_cluster.restart(2)
    eventually(port, "all current again", all_current, timeout=DETECTED)
    wait_until(
        lambda: "JetStream stream AGENT_STATUS: all 3 replicas current again" in manager.output(),
        "the recovery line",
        timeout=15,
        detail=manager.output,
    )
    assert (
        manager.output().count("JetStream stream AGENT_STATUS is degraded") == 1
    )  # said once, not per check
    assert manager.stop() == 0
