"""What a Prometheus scrape costs at fleet size: `Metrics.render()` over a 200,000-agent store view and 12
workers' counters, against the baselines that decided its design, in one run.

- `render`: our text writer over the store's kept counts (`StatusView.counts()`), as a scrape runs it;
  `render_at_1000_agents` the same over a 1,000-agent view (a scrape must not grow with the fleet).
- `walk`: counting statuses by walking every agent's view instead (what the kept counts avoid).
- `prometheus_client`: the same families built as a custom collector and written by
  `prometheus_client.generate_latest` (only when that package is installed; it is not a dependency).
- `hot path`: what counting one message costs remoted (`stats.messages[type(parsed)] += 1`).

    .venv/bin/python bench/metrics.py [--agents 200000] [--workers 12] [--rounds 200] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import timeit
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from agentpulse.metrics.exposition import Family, MetricType
from agentpulse.metrics.registry import Metrics
from agentpulse.records import StatusUpdate
from agentpulse.remoted.grace import GraceTracker
from agentpulse.remoted.stats import WorkerStats
from agentpulse.remoted.worker_pool import WorkerPool
from agentpulse.status import StatusCode, Trigger
from agentpulse.store.facade import Store
from agentpulse.wire.errors import Reason


def fleet(agents: int, directory: Path) -> Store:
    """A store whose view holds `agents` agents in a realistic mix (never opened: no database needed)."""
    store = Store(directory, manager_host="bench", node_name="node01")
    view = store.view
    for agent_id in range(1, agents + 1):
        agent = view.add(agent_id, f"bench-{agent_id:06d}", "any", 0.0)
        if agent_id % 50 == 0:
            continue  # never connected
        view.apply(agent, StatusUpdate(agent_id, Trigger.STARTUP, 1.0))
        if agent_id % 20 == 0:
            view.apply(agent, StatusUpdate(agent_id, Trigger.CONNECTION_LOST, 2.0))
        elif agent_id % 33 == 0:
            view.apply(agent, StatusUpdate(agent_id, Trigger.SHUTDOWN, 2.0))
        elif agent_id % 7:
            view.apply(agent, StatusUpdate(agent_id, Trigger.ALIVE, 2.0))
    return store


def workers(store: Store, count: int) -> WorkerPool:
    """A pool (not started) whose workers reported a busy day's counters."""
    pool = WorkerPool("/nonexistent", count, store, GraceTracker(store.submit, 1.0))
    kinds = ["keepalive", "event", "startup", "shutdown", "request_reply", "other", "ping"]
    reasons = [reason.name.lower() for reason in Reason] + ["connection_limit", "frame_timeout"]
    for worker in pool.workers:
        worker.stats.update(
            WorkerStats(
                16_000,
                {kind: 10_000_000 + n for n, kind in enumerate(kinds)},
                {reason: 100 + n for n, reason in enumerate(reasons)},
                3,
            )
        )
    return pool


def timed(work: Callable[[], object], rounds: int) -> dict[str, float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    times.sort()
    return {
        "p50_ms": statistics.median(times) * 1000,
        "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))] * 1000,
        "max_ms": times[-1] * 1000,
    }


def walk_counts(store: Store) -> Counter[tuple[object, object]]:
    return Counter((view.status, view.code) for view in store.view.agents.values())


def prometheus_client_render(metrics: Metrics) -> Callable[[], bytes] | None:
    """The same families through prometheus_client's writer, if it is installed."""
    try:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
            Metric,
        )
    except ImportError:
        return None

    kinds: dict[MetricType, Any] = {
        MetricType.COUNTER: CounterMetricFamily,
        MetricType.GAUGE: GaugeMetricFamily,
    }

    def convert(family: Family) -> Metric:
        if family.type is MetricType.HISTOGRAM:
            histogram = HistogramMetricFamily(family.name, family.help, labels=[])
            buckets = [(dict(s.labels)["le"], s.value) for s in family.samples if s.suffix == "_bucket"]
            total = next(s.value for s in family.samples if s.suffix == "_sum")
            histogram.add_metric([], buckets, total)
            return histogram
        names = [name for name, _ in family.samples[0].labels] if family.samples else []
        name = family.name.removesuffix("_total") if family.type is MetricType.COUNTER else family.name
        metric = kinds[family.type](name, family.help, labels=names)
        for sample in family.samples:
            metric.add_metric([value for _, value in sample.labels], sample.value)
        return metric

    class Collector:
        def collect(self) -> Iterator[Metric]:
            for family in metrics.families():
                if family.type is not MetricType.HISTOGRAM or not family.samples[0].labels[:-1]:
                    yield convert(family)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())  # type: ignore[arg-type]
    return lambda: generate_latest(registry)


def hot_path_ns() -> dict[str, float]:
    """The one statement remoted adds per message, against an empty statement (the timing loop's cost)
    and against a Counter (what it replaced: a Python subclass of dict, slower to index)."""
    setup = (
        "from collections import Counter\n"
        "from agentpulse.remoted.stats import RemotedStats\n"
        "from agentpulse.wire import control\n"
        "messages = RemotedStats().messages\n"
        "counter = Counter()\n"
        "parsed = control.Keepalive.__new__(control.Keepalive)\n"
    )
    number = 1_000_000

    def best(statement: str) -> float:
        return min(timeit.repeat(statement, setup=setup, number=number, repeat=5)) / number * 1e9

    empty = best("pass")
    return {
        "count_one_message_ns": round(best("messages[type(parsed)] += 1") - empty, 1),
        "with_a_counter_ns": round(best("counter[type(parsed)] += 1") - empty, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=200_000)
    parser.add_argument("--workers", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        built = time.perf_counter()
        store = fleet(args.agents, Path(directory))
        build_s = time.perf_counter() - built
        pool = workers(store, args.workers)
        metrics = Metrics(store, pool=pool)
        body, _ = metrics.render()
        results: dict[str, Any] = {
            "python": platform.python_version(),
            "agents": args.agents,
            "workers": args.workers,
            "view_build_s_200k_transitions_with_counts": round(build_s, 2),
            "body_bytes": len(body),
            "series": sum(1 for line in body.splitlines() if line and not line.startswith(b"#")),
            "render": timed(metrics.render, args.rounds),
            "render_at_1000_agents": timed(
                Metrics(fleet(1000, Path(directory)), pool=pool).render, args.rounds
            ),
            "walk_counts_only": timed(lambda: walk_counts(store), max(5, args.rounds // 10)),
        }
        reference = prometheus_client_render(metrics)
        if reference is not None:
            results["prometheus_client"] = timed(reference, args.rounds)
        results.update(hot_path_ns())
        assert dict(walk_counts(store)) == {k: v for k, v in store.view.counts().items()}
        assert store.view.counts()[(store.view.agents[7].status, StatusCode.NONE)] > 0
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, figure in results.items():
            print(f"{name:45} {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
