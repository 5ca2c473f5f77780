"""Prometheus metrics of one daemon (its own registry, so tests can run several).

Every series describes this daemon: Prometheus adds the host through the scrape
target's labels (``instance``), so the daemon's own series carry no ``host`` label.
Two additions say which host a target is and what the cluster looks like
(docs/design.md, "Metrics"):

* ``seedance_build_info{version}`` (always) and, on a shared store,
  ``seedance_host_info{host}``: constant 1, to join on (``* on(instance)
  group_left(host) seedance_host_info``) when a dashboard wants the cluster's
  host names rather than addresses;
* on a shared store, what is the same from every host, read from the database at
  each scrape: ``seedance_cluster_hosts`` (every host that ever joined),
  ``seedance_cluster_hosts_alive``, and per host ``seedance_cluster_host_alive{host}``
  and ``seedance_cluster_host_renewed_timestamp_seconds{host}`` -- so that any host's
  ``/metrics`` can alert on a dead one.  While the database is out of reach these
  are absent rather than stale.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from seedance_watch import __version__
from seedance_watch.core.budget import TodaySpend
from seedance_watch.errors import StateError
from seedance_watch.ledger.base import HostLease

__all__ = ["Metrics"]

log = structlog.get_logger(__name__)


class _ClusterCollector:
    """The shared store's hosts, read at each scrape (nothing when they cannot be read)."""

    def __init__(self, hosts: Callable[[], Sequence[HostLease] | None]) -> None:
        self.hosts = hosts

    def collect(self) -> Iterator[Metric]:
        try:
            hosts = self.hosts()
        except StateError as exc:  # the database out of reach: absent, not stale
            log.debug("metrics.hosts_unreadable", error=exc.message)
            return
        if hosts is None:
            return
        known = GaugeMetricFamily(
            "seedance_cluster_hosts", "Hosts that ever joined the shared store."
        )
        known.add_metric([], len(hosts))
        alive = GaugeMetricFamily(
            "seedance_cluster_hosts_alive", "Hosts of the shared store whose lease runs."
        )
        alive.add_metric([], sum(1 for h in hosts if h.alive))
        each = GaugeMetricFamily(
            "seedance_cluster_host_alive",
            "1 while the host's lease runs (by the database's clock), else 0.",
            labels=["host"],
        )
        renewed = GaugeMetricFamily(
            "seedance_cluster_host_renewed_timestamp_seconds",
            "Unix time of the host's last lease renewal (the database's clock).",
            labels=["host"],
        )
        for host in hosts:
            each.add_metric([host.name], 1 if host.alive else 0)
            try:
                at = dt.datetime.fromisoformat(host.renewed_at.replace("Z", "+00:00"))
            except ValueError:
                continue
            renewed.add_metric([host.name], at.timestamp())
        yield from (known, alive, each, renewed)


class Metrics:
    """Counters and histograms the pipeline reports (it is the pipeline's
    :class:`~seedance_watch.pipeline.ports.Observer`) and ``/metrics`` serves."""

    def __init__(
        self,
        job_counts: Callable[[], Mapping[str, int]] | None = None,
        kind_counts: Callable[[], Mapping[tuple[str, str], int]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.submits = Counter("seedance_submits", "Submit calls that created a task.", registry=r)
        self.submit_attempts = Counter(
            "seedance_submit_attempts", "Submit calls sent (any outcome).", registry=r
        )
        self.polls = Counter("seedance_polls", "Poll calls sent.", registry=r)
        self.retries = Counter(
            "seedance_retries", "Retries scheduled, by stage.", ["stage"], registry=r
        )
        self.http_responses = Counter(
            "seedance_http_responses",
            "HTTP responses from the gateway and the video host, by operation (submit, poll, "
            "download, check) and status.",
            ["operation", "status"],
            registry=r,
        )
        self.upload_bytes = Counter("seedance_upload_bytes", "Bytes uploaded to S3.", registry=r)
        self.upload_seconds = Counter(
            "seedance_upload_seconds", "Seconds spent uploading.", registry=r
        )
        self.download_bytes = Counter(
            "seedance_download_bytes", "Video bytes downloaded.", registry=r
        )
        self.download_seconds = Counter(
            "seedance_download_seconds", "Seconds spent downloading videos.", registry=r
        )
        self.job_latency = Histogram(
            "seedance_job_latency_seconds",
            "From a job's creation to its end (done or failed).",
            buckets=(5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200),
            registry=r,
        )
        self.finished_jobs = Counter(
            "seedance_jobs_finished", "Jobs that ended, by outcome.", ["state"], registry=r
        )
        self.jobs = Gauge("seedance_jobs", "Jobs in the ledger by state.", ["state"], registry=r)
        self.jobs_by_kind = Gauge(
            "seedance_jobs_by_kind",
            "Jobs in the ledger by kind (image, frames, text) and state.",
            ["kind", "state"],
            registry=r,
        )
        self.last_gateway_success = Gauge(
            "seedance_last_gateway_success_timestamp",
            "Unix time of the last successful gateway call.",
            registry=r,
        )
        self.since_gateway_success = Gauge(
            "seedance_seconds_since_last_gateway_success",
            "Seconds since the last successful gateway call (NaN before the first).",
            registry=r,
        )
        self.since_gateway_success.set_function(self._since_gateway_success)
        self._last_gateway_success: float | None = None
        self.budget_spent = Gauge(
            "seedance_budget_spent_today",
            "What today's submits may cost (budget.currency).",
            registry=r,
        )
        self.budget_cap = Gauge(
            "seedance_budget_cap", "budget.max_cost_per_day (absent without a cap).", registry=r
        )
        self.budget_submits = Gauge(
            "seedance_budget_submits_today", "Submits counted against today's budget.", registry=r
        )
        self.pause_state = Gauge(
            "seedance_paused", "1 while submissions are paused, by reason.", ["reason"], registry=r
        )
        self._job_counts = job_counts
        self._kind_counts = kind_counts
        self.build_info = Gauge(
            "seedance_build_info", "Constant 1: this daemon's version.", ["version"], registry=r
        )
        self.build_info.labels(version=__version__).set(1)
        self.host_info = Gauge(
            "seedance_host_info",
            "Constant 1: this daemon's host name in the shared store (cluster.name).",
            ["host"],
            registry=r,
        )

    def cluster(self, host: str, hosts: Callable[[], Sequence[HostLease] | None]) -> None:
        """On a shared store: this daemon is ``host``; ``hosts`` reads every host's lease."""
        self.host_info.labels(host=host).set(1)
        self.registry.register(_ClusterCollector(hosts))

    # --- the pipeline's Observer (pipeline/ports.py) -----------------------------------

    def submit_attempted(self) -> None:
        self.submit_attempts.inc()

    def submitted(self) -> None:
        self.submits.inc()

    def polled(self) -> None:
        self.polls.inc()

    def retried(self, stage: str) -> None:
        self.retries.labels(stage=stage).inc()

    def paused(self, reason: str, active: bool) -> None:
        self.pause_state.labels(reason=reason).set(1 if active else 0)

    def uploaded(self, size: int, seconds: float) -> None:
        self.upload_bytes.inc(size)
        self.upload_seconds.inc(seconds)

    def downloaded(self, size: int, seconds: float) -> None:
        self.download_bytes.inc(size)
        self.download_seconds.inc(seconds)

    def finished(self, state: str, seconds: float) -> None:
        self.finished_jobs.labels(state=state).inc()
        self.job_latency.observe(max(0.0, seconds))

    def gateway_ok(self) -> None:
        now = time.time()
        self._last_gateway_success = now
        self.last_gateway_success.set(now)

    def budget(self, today: TodaySpend) -> None:
        self.budget_spent.set(today["spent"])
        self.budget_submits.set(today["submits"])
        if today["cap"] is not None:
            self.budget_cap.set(today["cap"])

    def http_response(self, operation: str, status: int | None, seconds: float) -> None:
        """A provider's ``on_response``: every exchange, by operation and status."""
        self.http_responses.labels(operation=operation, status=str(status or "error")).inc()

    def _since_gateway_success(self) -> float:
        last = self._last_gateway_success
        return math.nan if last is None else max(0.0, time.time() - last)

    def render(self) -> bytes:
        """The Prometheus text exposition, with the job gauges refreshed."""
        if self._job_counts is not None:
            for state, count in self._job_counts().items():
                self.jobs.labels(state=state).set(count)
        if self._kind_counts is not None:
            for (kind, state), count in self._kind_counts().items():
                self.jobs_by_kind.labels(kind=kind, state=state).set(count)
        return generate_latest(self.registry)
