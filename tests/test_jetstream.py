"""`has_leader`: the setup's wait for a replicated stream's leader, on nats-py's own StreamInfo values."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from nats.js import JetStreamContext
from nats.js import api as js_api

from agentpulse.jetstream import has_leader


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
