"""The local NATS cluster (demo and tests): a port taken between its pick and the server's bind."""

from __future__ import annotations

import socket
from pathlib import Path

from agentpulse.cluster.localnats import LOOPBACK, LocalNatsCluster, ServerPorts


def test_a_port_taken_before_the_server_binds_it_means_new_ports_not_a_failure(tmp_path: Path) -> None:
    cluster = LocalNatsCluster(tmp_path, 1)
    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        busy = int(taken.getsockname()[1])
        first = cluster.ports[0]
        cluster.ports = [ServerPorts(busy, first.route, first.monitor)]
        try:
            cluster.start(timeout=20)
            assert cluster.ports[0].client != busy
            assert cluster.healthy(0)
        finally:
            cluster.stop()
