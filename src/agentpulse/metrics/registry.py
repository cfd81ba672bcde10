"""`Metrics`: every agentpulse metric, read from the live parts the manager hands it, rendered on demand.

Counters and gauges are read at scrape time from figures their owners keep anyway (the store's status
counts, each remoted's `WorkerStats`, the publishers' counts); histograms are filled by observers this
installs (the store's flush, the NATS publishes), so no owner learns what a metric is. The danger is the
cost of a scrape at fleet size: nothing here walks the agents (`StatusView.counts()` is kept as statuses
change), so a scrape at 200,000 agents costs what it costs at ten (bench/metrics.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from agentpulse.jetstream import StreamHealth
from agentpulse.metrics.exposition import CONTENT_TYPE, Family, MetricType, label_text, render
from agentpulse.metrics.histogram import DURATION_BUCKETS, SIZE_BUCKETS, Histogram
from agentpulse.metrics.sources import EnrolmentFigures, EventsFigures
from agentpulse.remoted.grace import LOCAL, GraceTracker
from agentpulse.remoted.keyguard import ReloadCounters
from agentpulse.remoted.server import Remoted
from agentpulse.remoted.stats import WorkerStats
from agentpulse.remoted.worker_pool import WorkerPool
from agentpulse.status import ConnectionStatus
from agentpulse.store.batch import Batch
from agentpulse.store.facade import Store
from agentpulse.store.sweeper import Sweeper

Collector = Callable[[], Iterable[Family]]
COUNTER, GAUGE, HISTOGRAM = MetricType.COUNTER, MetricType.GAUGE, MetricType.HISTOGRAM
STATUS_EVENTS, KEEPALIVE_EVENTS = "status", "keepalive"  # the `kind` of a NATS publish


@dataclass(frozen=True, slots=True)
class WorkerFigures:
    """One remoted (a worker process, or `0` in the manager's own process) as a scrape sees it."""

    label: str
    stats: WorkerStats
    restarts: int | None = None  # None: not a worker process
    up: bool = True


class Metrics:
    def __init__(
        self,
        store: Store,
        *,
        sweeper: Sweeper | None = None,
        grace: GraceTracker | None = None,
        remoted: Remoted | None = None,
        pool: WorkerPool | None = None,
        events: EventsFigures | None = None,
        enrolment: EnrolmentFigures | None = None,
        reloads: ReloadCounters | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.sweeper = sweeper
        self.grace = grace
        self.remoted = remoted
        self.pool = pool
        self.events = events
        self.enrolment = enrolment
        self.reloads = reloads
        self.clock = clock
        self.started = clock()
        self.flush_seconds = Histogram(DURATION_BUCKETS)
        self.flush_rows = Histogram(SIZE_BUCKETS)
        self.keepalive_lag = 0.0  # of the last commit that carried keep-alives
        self.publish_seconds = {STATUS_EVENTS: Histogram(DURATION_BUCKETS)}
        self._spool_depth: Callable[[], float] | None = None
        self._collectors: list[Collector] = []
        store.observe_flushes(self._flushed)
        if events is not None:
            events.outbox.on_published = self._published(STATUS_EVENTS)
            if events.keepalives is not None:
                self.publish_seconds[KEEPALIVE_EVENTS] = Histogram(DURATION_BUCKETS)
                events.keepalives.on_published = self._published(KEEPALIVE_EVENTS)

    # -- registration hooks ----------------------------------------------------------------------------

    def set_event_spool_depth(self, read: Callable[[], float]) -> None:
        """The agent event spool (once it exists) says here how to read its depth; 0 until then."""
        self._spool_depth = read

    def add_collector(self, collect: Collector) -> None:
        """More families, rendered after ours on every scrape (a part added later brings its own)."""
        self._collectors.append(collect)

    # -- observers (called by their owners) ------------------------------------------------------------

    def _flushed(self, batch: Batch, seconds: float, committed_at: float) -> None:
        """Writer thread, after each commit."""
        self.flush_seconds.observe(seconds)
        self.flush_rows.observe(len(batch.keepalives) + len(batch.history))
        if batch.keepalives:
            oldest = min(at for at, _ in batch.keepalives.values())
            self.keepalive_lag = max(0.0, committed_at - oldest)

    def _published(self, kind: str) -> Callable[[float, int], None]:
        histogram = self.publish_seconds[kind]
        return lambda seconds, _events: histogram.observe(seconds)

    # -- a scrape --------------------------------------------------------------------------------------

    def render(self) -> tuple[bytes, str]:
        """The body and content type of `GET /metrics` (the HTTP API calls this; so does our listener)."""
        return render(self.families()), CONTENT_TYPE

    def families(self) -> list[Family]:
        families = [
            *self._agents(),
            *self._remoted(self.workers()),
            *self._store(),
            *self._events(),
            *self._enrolment(),
            *self._sweeper(),
            *self._grace(),
            *self._reloads(),
        ]
        spool = Family("agentpulse_event_spool_depth", GAUGE, "Agent events waiting in the spool")
        spool.add(self._spool_depth() if self._spool_depth is not None else 0)
        started = Family("agentpulse_start_time_seconds", GAUGE, "When the manager started (Unix time)")
        started.add(self.started)
        families += [spool, started]
        for collect in self._collectors:
            families.extend(collect())
        return families

    def workers(self) -> list[WorkerFigures]:
        if self.remoted is not None:
            return [WorkerFigures(str(LOCAL), self.remoted.stats_snapshot())]
        if self.pool is None:
            return []
        return [
            WorkerFigures(str(worker.index), worker.stats.total, worker.restarts, worker.ready.is_set())
            for worker in self.pool.workers
        ]

    def _agents(self) -> list[Family]:
        counts = self.store.view.counts()
        by_status = Family(
            "agentpulse_agents", GAUGE, "Agents by connection status (the manager not counted)"
        )
        totals = dict.fromkeys(ConnectionStatus, 0)
        by_code = Family(
            "agentpulse_agents_by_code",
            GAUGE,
            "Agents by connection status and status code (pairs with agents)",
        )
        for (status, code), count in sorted(counts.items()):
            totals[status] += count
            by_code.add(count, (("status", status.value), ("code", str(int(code)))))
        for status, count in totals.items():
            by_status.add(count, (("status", status.value),))
        return [by_status, by_code]

    @staticmethod
    def _remoted(workers: list[WorkerFigures]) -> list[Family]:
        connections = Family("agentpulse_worker_connections", GAUGE, "TCP connections open, per remoted")
        keepalives = Family("agentpulse_keepalives_total", COUNTER, "Keep-alives received, per remoted")
        messages = Family("agentpulse_messages_total", COUNTER, "Messages received, per remoted and kind")
        refusals = Family(
            "agentpulse_refusals_total", COUNTER, "Connections and messages refused, per remoted and reason"
        )
        dropped = Family(
            "agentpulse_replies_dropped_total", COUNTER, "Replies dropped on a full socket, per remoted"
        )
        restarts = Family("agentpulse_worker_restarts_total", COUNTER, "Worker processes restarted")
        up = Family("agentpulse_worker_up", GAUGE, "1 while the worker process listens")
        for worker in workers:
            label = (("worker", worker.label),)
            stats = worker.stats
            connections.add(stats.connections, label)
            keepalives.add(stats.keepalives, label)
            for kind, count in sorted(stats.messages.items()):
                messages.add(count, (*label, ("kind", kind)))
            for reason, count in sorted(stats.refusals.items()):
                refusals.add(count, (*label, ("reason", reason)))
            dropped.add(stats.replies_dropped, label)
            if worker.restarts is not None:
                restarts.add(worker.restarts, label)
                up.add(worker.up, label)
        families = [connections, keepalives, messages, refusals, dropped]
        return [*families, restarts, up] if restarts.samples else families

    def _store(self) -> list[Family]:
        seconds = Family(
            "agentpulse_store_flush_seconds", HISTOGRAM, "Time to commit one batch to the database"
        )
        self.flush_seconds.add_to(seconds)
        rows = Family(
            "agentpulse_store_flush_batch_size",
            HISTOGRAM,
            "Keep-alive and status rows in one committed batch",
        )
        self.flush_rows.add_to(rows)
        lag = Family(
            "agentpulse_store_keepalive_lag_seconds",
            GAUGE,
            "Age of the oldest keep-alive of the last commit when it was committed (keep-alive to database)",
        )
        lag.add(self.keepalive_lag)
        flushes = Family("agentpulse_store_flushes_total", COUNTER, "Batches committed")
        flushes.add(self.store.flushes)
        errors = Family(
            "agentpulse_store_write_errors_total", COUNTER, "Commits that failed (and were retried)"
        )
        errors.add(self.store.write_errors)
        return [seconds, rows, lag, flushes, errors]

    def _events(self) -> list[Family]:
        events = self.events
        connected = Family("agentpulse_nats_connected", GAUGE, "1 while the NATS connection is up")
        connected.add(events is not None and events.link.up)
        if events is None:
            return [connected]
        depth = Family(
            "agentpulse_outbox_depth", GAUGE, "Status events committed and not yet acknowledged by JetStream"
        )
        depth.add(events.outbox.depth)
        published = Family("agentpulse_events_published_total", COUNTER, "Events published to NATS, by kind")
        published.add(events.outbox.published, (("kind", STATUS_EVENTS),))
        latency = Family(
            "agentpulse_nats_publish_seconds",
            HISTOGRAM,
            "One batch of events: first publish to the last JetStream ack (status) or flush (keep-alive)",
        )
        for kind, histogram in self.publish_seconds.items():
            histogram.add_to(latency, (("kind", kind),))
        families = [connected, depth, published, latency]
        keepalive_events = events.keepalives
        if keepalive_events is not None:
            published.add(keepalive_events.published, (("kind", KEEPALIVE_EVENTS),))
            dropped = Family(
                "agentpulse_keepalive_events_dropped_total", COUNTER, "Keep-alive events dropped (NATS away)"
            )
            dropped.add(keepalive_events.dropped)
            families.append(dropped)
        families += self._streams(events.streams.health.values(), events.streams.readable())
        return families

    @staticmethod
    def _streams(streams: Iterable[StreamHealth], readable: Mapping[str, bool]) -> list[Family]:
        """The JetStream streams agentpulse writes, as last read back (events/streamwatch.py)."""
        read = Family(
            "agentpulse_nats_stream_readable",
            GAUGE,
            "1 when the stream's last read back worked; 0: missing, or no leader answered (alert on it)",
        )
        for name, ok in sorted(readable.items()):
            read.add(1.0 if ok else 0.0, (("stream", name),))
        replicas = Family("agentpulse_nats_stream_replicas", GAUGE, "Replicas the stream is configured with")
        current = Family(
            "agentpulse_nats_stream_replicas_current",
            GAUGE,
            "Replicas holding every message (the leader and the current followers); below replicas: degraded",
        )
        messages = Family("agentpulse_nats_stream_messages", GAUGE, "Messages the stream holds")
        for health in sorted(streams, key=lambda h: h.name):
            labels = (("stream", health.name),)
            replicas.add(health.replicas, labels)
            current.add(health.current, labels)
            messages.add(health.messages, labels)
        if not read.samples:  # no stream read yet
            return []
        return [read, replicas, current, messages] if replicas.samples else [read]

    def _enrolment(self) -> list[Family]:
        if self.enrolment is None:
            return []
        enrolled = Family("agentpulse_enrolments_total", COUNTER, "Agents enrolled on the enrolment port")
        enrolled.add(self.enrolment.enrolled)
        refused = Family(
            "agentpulse_enrolment_refusals_total", COUNTER, "Enrolment requests refused, by reason"
        )
        totals: dict[str, int] = {}
        for kind, count in self.enrolment.refusals.items():
            label = label_text(kind)
            totals[label] = totals.get(label, 0) + count
        for label, count in sorted(totals.items()):
            refused.add(count, (("reason", label),))
        return [enrolled, refused]

    def _sweeper(self) -> list[Family]:
        if self.sweeper is None:
            return []
        runs = Family("agentpulse_sweeper_runs_total", COUNTER, "Disconnection sweeps run")
        runs.add(self.sweeper.runs)
        swept = Family(
            "agentpulse_sweeper_disconnected_total",
            COUNTER,
            "Agents the sweeper marked disconnected (code 4)",
        )
        swept.add(self.sweeper.disconnected)
        return [runs, swept]

    def _grace(self) -> list[Family]:
        if self.grace is None:
            return []
        stretched = Family(
            "agentpulse_connection_grace_stretched_total",
            COUNTER,
            "Connection graces run on because the manager was behind when they ended (overload)",
        )
        stretched.add(self.grace.stretches)
        return [stretched]

    def _reloads(self) -> list[Family]:
        if self.reloads is None:
            return []
        reloads = Family(
            "agentpulse_keys_reloads_total",
            COUNTER,
            "client.keys reloads judged: accepted, or refused whole (an invalid line or too many removals)",
        )
        reloads.add(self.reloads.accepted, (("result", "accepted"),))
        reloads.add(self.reloads.refused, (("result", "refused"),))
        return [reloads]
