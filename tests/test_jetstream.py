"""`has_leader`: the setup's wait for a replicated stream's leader, on nats-py's own StreamInfo values."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from nats.js import JetStreamContext
from nats.js import api as js_api

from agentpulse.jetstream import has_leader, stream_health


class Infos:
    """stream_info answers in turn (the last one repeated), counting the calls."""

    def __init__(self, *clusters: js_api.ClusterInfo | None) -> None:
        self.clusters = list(clusters)
        self.calls = 0

    async def stream_info(self, name: str) -> js_api.StreamInfo:
        cluster = self.clusters[min(self.calls, len(self.clusters) - 1)]
        self.calls += 1
        return js_api.StreamInfo(
            config=js_api.StreamConfig(name=name), state=cast(Any, None), cluster=cluster
        )


def wait(infos: Infos, timeout: float) -> bool:
    return asyncio.run(has_leader(cast(JetStreamContext, infos), "AGENT_STATUS", timeout))


def test_a_stream_that_elects_its_leader_is_waited_for() -> None:
    infos = Infos(js_api.ClusterInfo(), js_api.ClusterInfo(leader=None), js_api.ClusterInfo(leader="n2"))
    assert wait(infos, 5.0) and infos.calls == 3


def test_a_stream_without_a_leader_is_given_up_on_after_the_timeout() -> None:
    infos = Infos(js_api.ClusterInfo(name="c1"))
    assert not wait(infos, 0.3) and 2 <= infos.calls <= 5


def test_a_stream_on_a_single_server_needs_no_wait() -> None:
    infos = Infos(None)
    assert wait(infos, 5.0) and infos.calls == 1


def info_of(replicas: int, cluster: js_api.ClusterInfo | None, messages: int = 7) -> js_api.StreamInfo:
    return js_api.StreamInfo(
        config=js_api.StreamConfig(name="AGENT_EVENTS", num_replicas=replicas),
        state=js_api.StreamState(
            messages=messages, bytes=0, first_seq=1, last_seq=messages, consumer_count=0
        ),
        cluster=cluster,
    )


def peer(name: str, *, current: bool, offline: bool = False) -> js_api.PeerInfo:
    return js_api.PeerInfo(name=name, current=current, offline=offline, active=0.1, lag=0)


def test_a_stream_on_one_server_is_its_own_current_copy() -> None:
    health = stream_health(info_of(1, None))
    assert (health.name, health.replicas, health.current, health.messages) == ("AGENT_EVENTS", 1, 1, 7)
    assert not health.degraded and health.peers == {} and health.lagging() == []


def test_three_replicas_all_current_are_healthy() -> None:
    cluster = js_api.ClusterInfo(leader="n1", replicas=[peer("n2", current=True), peer("n3", current=True)])
    health = stream_health(info_of(3, cluster))
    assert health.leader == "n1" and health.peers == {"n1": True, "n2": True, "n3": True}
    assert health.current == 3 and not health.degraded


def test_a_replica_offline_or_behind_makes_the_stream_degraded_and_is_named() -> None:
    cluster = js_api.ClusterInfo(
        leader="n1",
        replicas=[peer("n2", current=True, offline=True), peer("n3", current=False)],
    )
    health = stream_health(info_of(3, cluster))
    assert health.current == 1 and health.degraded and health.lagging() == ["n2", "n3"]


def test_a_replicated_stream_electing_its_leader_is_degraded() -> None:
    cluster = js_api.ClusterInfo(leader=None, replicas=[peer("n2", current=True), peer("n3", current=True)])
    health = stream_health(info_of(3, cluster))
    assert health.leader is None and health.current == 2 and health.degraded


def test_a_replicated_stream_with_no_cluster_info_counts_no_current_copy() -> None:
    health = stream_health(info_of(3, None))
    assert health.current == 0 and health.degraded
