"""The tests' port picker: below the ephemeral range (no outgoing connection can hold the port), one slice
per xdist worker, and never a port that something listens on."""

from __future__ import annotations

import socket

import pytest

from tests import ports


def test_ports_are_below_the_ephemeral_range_and_differ_from_one_pick_to_the_next() -> None:
    picked = [ports.free_port() for _ in range(5)]
    assert len(set(picked)) == 5
    assert all(ports.LOWEST <= port < ports.ephemeral_low() for port in picked)


def test_a_port_something_listens_on_is_skipped() -> None:
    port = ports.free_port()
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        held.bind((ports.LOOPBACK, port))
        held.listen()
        assert not ports._bindable(port)


@pytest.mark.parametrize(("worker", "count"), [("gw0", "4"), ("gw3", "4"), ("gw1", "2")])
def test_each_xdist_worker_has_a_slice_of_its_own(
    monkeypatch: pytest.MonkeyPatch, worker: str, count: str
) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", count)
    mine = ports.worker_slice()
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw2" if worker != "gw2" else "gw0")
    other = ports.worker_slice()
    assert len(mine) > 100 and not set(mine) & set(other)
    assert mine.stop <= ports.ephemeral_low()
