"""serve's /metrics: the history's fold (projections/metrics.py) in Prometheus' format.

Imported by serve only when ``--metrics-address`` is given, after its command server is
forked (cli/serve_cmd.py): prometheus_client is no other command's cost, and the HTTP
server's threads start in a process that forks no more.

Two threads meet here. serve's event loop folds new events into TaskMetrics after each
catch-up of the views (MetricsFeed.refresh) and publishes a MetricsSnapshot; the HTTP
server's threads read the newest snapshot at scrape time (HistoryCollector.collect).
A snapshot is never changed once published, so a scrape needs no lock, never touches a
database from the HTTP thread, and never waits for the loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from cli.metrics_address import MetricsAddress
from domain.values import Whose
from projections.metrics import MetricsSnapshot, TaskMetrics
from projections.view import PAGE_SIZE, EventSource, View

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

logger = logging.getLogger(__name__)


class MetricsFeed:
    """Keeps the fold at the store's head, from serve's loop; publishes snapshots.

    Made before the store is open (serve binds its port first, so that a port taken is
    refused before anything starts); each refresh is handed the store and the views.
    """

    def __init__(self, whose: Whose) -> None:
        self._metrics = TaskMetrics(whose)
        self._last_fault = ""
        self.snapshot: MetricsSnapshot | None = None  # None until the first fold is done

    async def refresh(self, source: EventSource, views: Mapping[str, View]) -> None:
        """Fold what was appended since the last refresh; a fault keeps the last snapshot.

        The head and the views' positions are read first, so the lag is the views' as
        this refresh found them, and the fold then reaches at least that head.
        """
        try:
            head = await source.head()
            lag = {name: max(head - await view.position(), 0) for name, view in views.items()}
            while page := await source.read(self._metrics.position, PAGE_SIZE):
                self._metrics.fold(page)
        except Exception as exc:  # the store or a view is down: serve goes on, and says so
            line = f"{type(exc).__name__}: {exc}"
            if line != self._last_fault:  # once, not every 0.2 s
                logger.warning("metrics not refreshed: %s", line)
                self._last_fault = line
            return
        self._last_fault = ""
        self.snapshot = self._metrics.snapshot(max(head, self._metrics.position), lag)


class HistoryCollector(Collector):
    """The task metrics of the feed's newest snapshot, as metric families."""

    def __init__(self, feed: MetricsFeed) -> None:
        self._feed = feed

    def collect(self) -> Iterator[Metric]:
        snapshot = self._feed.snapshot
        if snapshot is None:
            return
        yield from families(snapshot)


def families(s: MetricsSnapshot) -> Iterator[Metric]:
    """A snapshot as Prometheus metric families (names without _total: the family adds it)."""
    events = CounterMetricFamily(
        "shimledger_task_events", "Events recorded in the tasks' history, by type.",
        labels=["namespace", "type"])  # fmt: skip
    for (namespace, kind), n in sorted(s.events.items()):
        events.add_metric([namespace, kind], n)
    yield events
    exits = CounterMetricFamily(
        "shimledger_task_exits", "Task exits, by exit status and the signal that killed it.",
        labels=["namespace", "exit_status", "signal"])  # fmt: skip
    for labels, n in sorted(s.exits.items()):
        exits.add_metric(list(labels), n)
    yield exits
    for name, doc, values in (
        ("shimledger_task_ooms", "OOM events of tasks (the kernel killed a process).", s.ooms),
        ("shimledger_shims_lost", "Shims that died under a live task.", s.shims_lost),
        ("shimledger_task_restarts", "Incarnations of an ID beyond its first.", s.restarts),
    ):
        counter = CounterMetricFamily(name, doc, labels=["namespace"])
        for namespace, n in sorted(values.items()):
            counter.add_metric([namespace], n)
        yield counter
    live = GaugeMetricFamily("shimledger_live_tasks", "Task incarnations not deleted, by status.",
                             labels=["namespace", "status"])  # fmt: skip
    for (namespace, status), n in sorted(s.live.items()):
        live.add_metric([namespace, status], n)
    yield live
    lifetimes = HistogramMetricFamily(
        "shimledger_task_lifetime_seconds",
        "Seconds from a task's Created to its Exited, observed at its exit.",
        labels=["namespace"])  # fmt: skip
    for namespace, histogram in sorted(s.lifetimes.items()):
        buckets = [(_bound(le), n) for le, n in histogram.cumulative()]
        lifetimes.add_metric([namespace], buckets, histogram.total)
    yield lifetimes
    lag = GaugeMetricFamily("shimledger_view_lag_events",
                            "Events the view has still to apply to reach the store's head.",
                            labels=["view"])  # fmt: skip
    for view, n in sorted(s.view_lag.items()):
        lag.add_metric([view], n)
    yield lag
    yield GaugeMetricFamily("shimledger_store_head_position",
                            "Position of the newest event in the store.", value=s.head)  # fmt: skip


def _bound(le: float) -> str:
    return "+Inf" if le == float("inf") else repr(le)


@dataclass
class MetricsServer:
    """The HTTP server of /metrics, on the port it was given or (given 0) found."""

    address: MetricsAddress
    feed: MetricsFeed
    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    @property
    def url(self) -> str:
        return self.address.url(self.port)

    def close(self) -> None:
        """Stop serving and release the port (a scrape in flight finishes first)."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def registry_for(feed: MetricsFeed) -> CollectorRegistry:
    """A registry of its own (not prometheus_client's global one, which other code of the
    process could fill): the history's collector and the process collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HistoryCollector(feed))
    ProcessCollector(registry=registry)
    return registry


def serve_metrics(address: MetricsAddress, feed: MetricsFeed) -> MetricsServer:
    """Bind and start serving; an address that cannot be bound raises OSError at once."""
    server, thread = start_http_server(address.port, address.host, registry_for(feed))
    return MetricsServer(address, feed, server, thread)
