"""`Metrics` over a real store (a global.db in a temporary folder) and a real in-process remoted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentpulse.config import Config
from agentpulse.jetstream import StreamHealth
from agentpulse.metrics.exposition import Family
from agentpulse.metrics.registry import Metrics
from agentpulse.records import StatusUpdate
from agentpulse.remoted.grace import GraceTracker
from agentpulse.remoted.keyguard import ReloadCounters, ReloadDecision, Verdict
from agentpulse.remoted.keystore import KeyStore
from agentpulse.remoted.server import Remoted
from agentpulse.status import StatusCode, Trigger
from agentpulse.store.facade import Store
from agentpulse.store.sweeper import Sweeper
from agentpulse.wire import control
from agentpulse.wire.errors import Reason, WireError
from agentpulse.wire.keys import KeysFile

KEEPALIVE = control.parse_keepalive(b"Linux |h |6.1 |#1 |x86_64 - Wazuh v4.14.7\nx merged.mg\n")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    keys = KeysFile.parse("".join(f"{n:03d} agent-{n:02d} any key{n}\n" for n in range(1, 6)))
    store = Store(tmp_path / "db", manager_host="mgr", node_name="node01", flush_interval=0.05)
    store.open(list(keys.active()))
    yield store
    store.close()


def samples(families: list[Family], name: str) -> dict[tuple[tuple[str, str], ...], float]:
    family = next(f for f in families if f.name == name)
    return {sample.labels: sample.value for sample in family.samples if not sample.suffix}


def test_agents_by_status_and_code_follow_the_store(store: Store) -> None:
    metrics = Metrics(store)
    store.submit(StatusUpdate(1, Trigger.STARTUP, 1.0))
    store.submit(StatusUpdate(1, Trigger.ALIVE, 2.0, keepalive=KEEPALIVE))
    store.submit(StatusUpdate(2, Trigger.STARTUP, 1.0))
    store.submit(StatusUpdate(3, Trigger.STARTUP, 1.0))
    store.submit(StatusUpdate(3, Trigger.SHUTDOWN, 3.0))
    families = metrics.families()
    assert samples(families, "agentpulse_agents") == {
        (("status", "never_connected"),): 2,
        (("status", "pending"),): 1,
        (("status", "active"),): 1,
        (("status", "disconnected"),): 1,
    }
    assert samples(families, "agentpulse_agents_by_code") == {
        (("status", "never_connected"), ("code", "0")): 2,
        (("status", "pending"), ("code", "0")): 1,
        (("status", "active"), ("code", "0")): 1,
        (("status", "disconnected"), ("code", str(int(StatusCode.SHUTDOWN_RECEIVED)))): 1,
    }


def test_a_commit_fills_the_flush_histograms_and_the_keepalive_lag(store: Store) -> None:
    metrics = Metrics(store)
    store.submit(StatusUpdate(1, Trigger.STARTUP, 1.0))
    store.submit(StatusUpdate(1, Trigger.ALIVE, 2.0, keepalive=KEEPALIVE))
    assert store.flush_wait()
    assert metrics.flush_seconds.count >= 1
    assert metrics.flush_rows.sum >= 3  # one keep-alive row, two history rows
    assert metrics.keepalive_lag > 1_000_000  # the keep-alive claimed to be from 1970
    text = metrics.render()[0].decode()
    assert 'agentpulse_store_flush_seconds_bucket{le="+Inf"} ' in text
    assert "agentpulse_store_flushes_total " in text


def test_the_sweeper_runs_are_counted(store: Store) -> None:
    sweeper = Sweeper(store, timeout=900)
    metrics = Metrics(store, sweeper=sweeper)
    sweeper.sweep()
    sweeper.sweep()
    assert samples(metrics.families(), "agentpulse_sweeper_runs_total") == {(): 2}


def test_keys_reloads_are_counted_by_result(store: Store) -> None:
    reloads = ReloadCounters()
    metrics = Metrics(store, reloads=reloads)
    assert samples(metrics.families(), "agentpulse_keys_reloads_total") == {
        (("result", "accepted"),): 0,
        (("result", "refused"),): 0,
    }
    accepted = ReloadDecision(Verdict.ACCEPTED, agents=5, added=1, changed=0, removed=(), known=4, allowed=1)
    refused = ReloadDecision(
        Verdict.TOO_MANY_REMOVED, agents=1, added=0, changed=0, removed=(2, 3, 4, 5), known=5, allowed=1
    )
    reloads.count(accepted, 1.0)
    reloads.count(refused, 2.0)
    reloads.count(refused, 3.0)
    assert samples(metrics.families(), "agentpulse_keys_reloads_total") == {
        (("result", "accepted"),): 1,
        (("result", "refused"),): 2,
    }


def test_stretched_connection_graces_are_counted(store: Store) -> None:
    grace = GraceTracker(store.submit, 1.0)
    assert not any(f.name == "agentpulse_connection_grace_stretched_total" for f in Metrics(store).families())
    grace.stretches = 4
    families = Metrics(store, grace=grace).families()
    assert samples(families, "agentpulse_connection_grace_stretched_total") == {(): 4}


def test_an_in_process_remoted_is_worker_0(store: Store) -> None:
    grace = GraceTracker(store.submit, 1.0)
    remoted = Remoted(Config(), KeyStore(), store, grace)
    remoted.stats.messages[control.Keepalive] += 3
    remoted.stats.messages[control.Startup] += 1
    remoted.refused(WireError(Reason.WRONG_KEY), "127.0.0.1", None)
    families = Metrics(store, remoted=remoted).families()
    assert samples(families, "agentpulse_keepalives_total") == {(("worker", "0"),): 3}
    assert samples(families, "agentpulse_messages_total") == {
        (("worker", "0"), ("kind", "keepalive")): 3,
        (("worker", "0"), ("kind", "startup")): 1,
    }
    assert samples(families, "agentpulse_refusals_total") == {(("worker", "0"), ("reason", "wrong_key")): 1}
    assert samples(families, "agentpulse_worker_connections") == {(("worker", "0"),): 0}
    assert not any(f.name == "agentpulse_worker_restarts_total" for f in families)


def test_the_event_spool_depth_is_0_until_the_spool_registers(store: Store) -> None:
    metrics = Metrics(store)
    assert samples(metrics.families(), "agentpulse_event_spool_depth") == {(): 0}
    metrics.set_event_spool_depth(lambda: 42)
    assert samples(metrics.families(), "agentpulse_event_spool_depth") == {(): 42}


def test_without_nats_the_connection_reads_0(store: Store) -> None:
    families = Metrics(store).families()
    assert samples(families, "agentpulse_nats_connected") == {(): 0}
    assert not any(f.name == "agentpulse_outbox_depth" for f in families)


def test_names_are_unique_and_the_render_is_one_text(store: Store) -> None:
    metrics = Metrics(store)
    names = [family.name for family in metrics.families()]
    assert len(names) == len(set(names))
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain; version=0.0.4")
    assert body.endswith(b"\n")
    assert body.count(b"# TYPE ") == len(names)


def test_streams_are_shown_as_last_read_back_and_absent_before() -> None:
    assert Metrics._streams([], {}) == []  # no stream read yet (or NATS away since the start): no family
    families = Metrics._streams(
        [
            StreamHealth("AGENT_STATUS", 3, "n1", {"n1": True, "n2": True, "n3": False}, 12),
            StreamHealth("AGENT_EVENTS", 1, None, {}, 40),
        ],
        {"AGENT_STATUS": True, "AGENT_EVENTS": True, "KV_agent_status": False},
    )
    assert samples(families, "agentpulse_nats_stream_readable") == {
        (("stream", "AGENT_EVENTS"),): 1,
        (("stream", "AGENT_STATUS"),): 1,
        (("stream", "KV_agent_status"),): 0,  # unreadable: no replicas sample, and this says why
    }
    assert samples(families, "agentpulse_nats_stream_replicas") == {
        (("stream", "AGENT_EVENTS"),): 1,
        (("stream", "AGENT_STATUS"),): 3,
    }
    assert samples(families, "agentpulse_nats_stream_replicas_current") == {
        (("stream", "AGENT_EVENTS"),): 1,
        (("stream", "AGENT_STATUS"),): 2,
    }
    assert samples(families, "agentpulse_nats_stream_messages")[(("stream", "AGENT_STATUS"),)] == 12
    assert "KV_agent_status" not in str(samples(families, "agentpulse_nats_stream_replicas"))
    only_unreadable = Metrics._streams([], {"AGENT_STATUS": False})
    assert [f.name for f in only_unreadable] == ["agentpulse_nats_stream_readable"]
